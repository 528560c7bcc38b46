"""export_check.py: loads a `switchyard export` safetensors file into PyTorch and
reproduces switchyard's loss on a validation batch.

usage: /usr/bin/python3 export_check.py MODEL.safetensors VAL.bin EVAL.json [TOL]

EVAL.json is `switchyard eval CHECKPOINT --batches 1 --json`: its batch_mean holds the
loss terms switchyard computed on validation batch 0. This script parses the safetensors
file itself (u64 header length, JSON header, data), rebuilds batch 0 from the token file
(the window order data.h documents), runs the model of DESIGN.md written here in PyTorch
(float64, the router in float32 as the design says: "selective precision") in eval mode
(the evaluation capacity factor, the routing groups of the stored config) and checks
ce, aux, z and the total against switchyard's to TOL (default 1e-5). Independent of
tests/oracle: nothing here comes from switchyard's C code but the file formats.
Exit 0 when every term agrees, 1 otherwise, 2 on bad input."""
import json
import math
import re
import struct
import sys

import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        sys.exit(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        sys.exit(f"{path}: header length {n} runs past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + n :]
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name}: dtype {t['dtype']}, expected F32")
        b, e = t["data_offsets"]
        x = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32)
        if x.numel() != math.prod(t["shape"]):
            sys.exit(f"{path}: tensor {name}: {x.numel()} values for shape {t['shape']}")
        tensors[name] = x.reshape(t["shape"]).to(torch.float64)
    return tensors, meta


def eval_batch0(val_path, B, T):
    """Rows of validation batch 0: window w = (i * stride mod W) * T (data.h)."""
    with open(val_path, "rb") as f:
        blob = f.read()
    if blob[:6] != b"SYTOK1":
        sys.exit(f"{val_path}: not a switchyard token file")
    n_langs, n_docs, n_bytes = struct.unpack_from("<IQQ", blob, 12)
    start = 64 + 16 * n_langs + 16 * n_docs
    stream = blob[start : start + n_bytes]
    W = (n_bytes - 1) // T
    if W <= 2:
        stride = 1
    else:
        stride = int(W * 0.6180339887498949) | 1
        while math.gcd(stride, W) != 1:
            stride += 2
    rows = []
    for i in range(B):
        w = ((i % W) * stride) % W
        rows.append(list(stream[w * T : w * T + T + 1]))
    return torch.tensor(rows, dtype=torch.long)


def rmsnorm(x, w):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w


def forward(P, cfg, groups, tokens):
    """Mean CE, and aux, z summed over switch layers of their means over groups."""
    B, T1 = tokens.shape
    T = T1 - 1
    x, y = tokens[:, :T], tokens[:, 1:]
    C, H, E, k = cfg["d_model"], cfg["n_heads"], cfg["n_experts"], cfg["top_k"]
    hd = C // H
    cf = float(f"{cfg['eval_capacity_factor']:.7g}")
    h = P["wte"][x] + P["wpe"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    aux_sum = z_sum = 0.0
    for l in range(cfg["n_layers"]):
        pre = f"layers.{l}."
        a = rmsnorm(h, P[pre + "norm1"])
        qkv = a @ P[pre + "attn.wqkv"]
        q, kk, v = qkv.split(C, dim=-1)
        q = q.view(B, T, H, hd).transpose(1, 2)
        kk = kk.view(B, T, H, hd).transpose(1, 2)
        v = v.view(B, T, H, hd).transpose(1, 2)
        s = (q @ kk.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf")).softmax(-1)
        o = (s @ v).transpose(1, 2).reshape(B, T, C)
        h = h + o @ P[pre + "attn.wo"]
        b = rmsnorm(h, P[pre + "norm2"])
        sw = cfg["switch_every"]
        if sw > 0 and l % sw == sw - 1:
            out = torch.zeros_like(b)
            rows = B // groups
            n = rows * T
            cap = min(n, math.ceil(cf * n / E))
            aux_g = z_g = 0.0
            for g in range(groups):
                bg = b[g * rows : (g + 1) * rows].reshape(n, C)
                logits = bg.to(torch.float32) @ P[pre + "router"].to(torch.float32)
                p = logits.softmax(-1)
                lse = torch.logsumexp(logits.double(), -1)
                z_g += (lse * lse).mean().item()
                choice = p.topk(k, dim=-1).indices  # [n, k]
                top1 = p.argmax(-1)
                f = torch.bincount(top1, minlength=E).double() / n
                aux_g += E * (f * p.double().mean(0)).sum().item()
                kept = [0] * E
                og = torch.zeros(n, C, dtype=torch.float64)
                for j in range(k):
                    for t in range(n):
                        e = int(choice[t, j])
                        if kept[e] >= cap:
                            continue
                        kept[e] += 1
                        hid = torch.relu(bg[t] @ P[pre + f"experts.{e}.w1"])
                        og[t] += p[t, e].double() * (hid @ P[pre + f"experts.{e}.w2"])
                out[g * rows : (g + 1) * rows] = og.view(rows, T, C)
            aux_sum += aux_g / groups
            z_sum += z_g / groups
            h = h + out
        else:
            h = h + torch.relu(b @ P[pre + "ffn.w1"]) @ P[pre + "ffn.w2"]
    logits = rmsnorm(h, P["normf"]) @ P["lm_head"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    return ce, aux_sum, z_sum


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    st, val, ev = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
    P, meta = load_safetensors(st)
    cfg = json.loads(meta["model"])
    m = re.search(r"^routing:\n(?:  .*\n)*?  groups: (\d+)", meta["config"], re.M)
    if not m:
        print(f"{st}: metadata config has no routing.groups", file=sys.stderr)
        return 2
    groups = int(m.group(1))
    with open(ev) as f:
        ref = json.load(f)
    B, T = ref["batch_size"], ref["seq_len"]
    if ref["batches"] != 1:
        print(f"{ev}: wants the loss of exactly one batch (got {ref['batches']})", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with torch.no_grad():
        ce, aux, z = forward(P, cfg, groups, eval_batch0(val, B, T))
    total = ce + cfg["aux_loss_coef"] * aux + cfg["z_loss_coef"] * z
    ours = ref["batch_mean"]
    worst = 0.0
    for name, mine in (("ce", ce), ("aux", aux), ("z", z), ("total", total)):
        err = abs(mine - ours[name])
        worst = max(worst, err)
        print(f"{name:6s} pytorch {mine:.9f}  switchyard {ours[name]:.9f}  |diff| {err:.2e}")
    print(f"{len(P)} tensors, batch {B} x {T}, {groups} group(s): worst |diff| {worst:.2e} (tolerance {tol:g})")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
