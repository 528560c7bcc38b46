#!/usr/bin/python3
"""refgen.py: the project's oracle. Builds PyTorch float64 reference cases for the model
of docs/design.md ("The model, exactly") and writes them in the format
`switchyard refcheck` reads (common/refcase.h): manifest.yaml plus raw little-endian
float32 (.f32) / int32 (.i32) tensors.

Needs Debian's PyTorch (`apt-get install python3-torch`; not on PyPI here), run with
/usr/bin/python3. Nothing in here uses the C code: it is an independent implementation
written from the design document.

    refgen.py write  OUT_DIR [CASE...]   write the cases (all by default) under OUT_DIR/CASE/
    refgen.py check  DIR [CASE...]       regenerate in memory and compare with DIR/CASE/
    refgen.py replay CASE_DIR            recompute losses, routing and gradients from the
                                         weights and tokens of any case, compare with its own
    refgen.py list                       the cases and what each covers

Everything random (weights, tokens) comes from a small integer generator defined here
(splitmix64), so the weights and tokens are bit-identical on any machine and any PyTorch
version; only the float64 sums may differ in their last bits.

Precision: the whole reference runs in float64, the router included (the implementation
runs its router in float32 by design; the exact maths is what it is checked against).
A case whose routing would change under float32 rounding (a near tie between the k-th and
the next expert) is refused, so routing can be compared exactly.
"""
import math
import os
import struct
import sys

try:
    import torch
except ImportError:  # the caller (tests/oracle_regen.sh) turns this into a skip
    sys.stderr.write("refgen: PyTorch is not installed (apt-get install python3-torch)\n")
    sys.exit(77)

torch.set_default_dtype(torch.float64)

# ---- the cases ------------------------------------------------------------------------
# name: (what it covers, model, routing, batch rows B, positions T, seed)
CASES = {
    "tiny": ("2 layers, 4 experts on layer 1, 2 groups, capacity factor 1.0 (tokens dropped)",
             dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, n_experts=4, switch_every=2, seq_len=16),
             dict(capacity_factor=1.0, groups=2, top_k=1), 4, 16, 1),
    "wide": ("d_model 64, 4 layers, 2 heads, 2 experts on layers 1 and 3, 2 groups",
             dict(d_model=64, n_layers=4, n_heads=2, d_ff=128, n_experts=2, switch_every=2, seq_len=32),
             dict(capacity_factor=1.0, groups=2, top_k=1), 2, 32, 2),
    "no-drop": ("capacity factor 4 over 4 experts: every token kept; 4 groups",
                dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, n_experts=4, switch_every=2, seq_len=16),
                dict(capacity_factor=4.0, groups=4, top_k=1), 4, 16, 3),
    "all-switch": ("every layer a switch layer, 8 experts, one group, capacity factor 1.25",
                   dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, n_experts=8, switch_every=1, seq_len=24),
                   dict(capacity_factor=1.25, groups=1, top_k=1), 2, 24, 4),
    "top2": ("top-2 routing on every one of 3 layers, 4 experts, 2 groups, second choices dropped",
             dict(d_model=32, n_layers=3, n_heads=4, d_ff=48, n_experts=4, switch_every=1, seq_len=16),
             dict(capacity_factor=1.25, groups=2, top_k=2), 4, 16, 5),
    "top3": ("top-3 routing, 6 experts on layers 1 and 3, 3 groups, capacity factor 1.0",
             dict(d_model=24, n_layers=4, n_heads=3, d_ff=40, n_experts=6, switch_every=2, seq_len=12),
             dict(capacity_factor=1.0, groups=3, top_k=3), 6, 12, 6),
    "groups4-short": ("4 groups over 8 rows, a batch shorter than seq_len (T 10 of 16), capacity factor 1.5",
                      dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, n_experts=4, switch_every=2, seq_len=16),
                      dict(capacity_factor=1.5, groups=4, top_k=1), 8, 10, 7),
}
AUX_COEF = 0.01
Z_COEF = 0.001
VOCAB = 256
EPS = 1e-6


# ---- deterministic numbers --------------------------------------------------------------

class Rng:
    """splitmix64: integers and normals that are the same everywhere."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFFFFFFFFFF

    def u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def uniform(self):  # (0, 1)
        return ((self.u64() >> 11) + 0.5) / float(1 << 53)

    def normals(self, n):
        out = []
        while len(out) < n:
            u1, u2 = self.uniform(), self.uniform()
            r = math.sqrt(-2.0 * math.log(u1))
            out.append(r * math.cos(2.0 * math.pi * u2))
            out.append(r * math.sin(2.0 * math.pi * u2))
        return out[:n]


def f32(values):
    """Round to float32 (the stored weights are float32; the model runs on those values)."""
    return list(struct.unpack("<%df" % len(values), struct.pack("<%df" % len(values), *values)))


# ---- parameters -------------------------------------------------------------------------

def is_switch(m, l):
    return m["switch_every"] > 0 and l % m["switch_every"] == m["switch_every"] - 1


def param_specs(m):
    """(name, shape, kind) in the canonical order of the manifests."""
    C, F, E, V = m["d_model"], m["d_ff"], m["n_experts"], VOCAB
    specs = [("wte", [V, C], "embed"), ("wpe", [m["seq_len"], C], "embed")]
    for l in range(m["n_layers"]):
        p = "layers.%d." % l
        specs += [(p + "norm1", [C], "norm"), (p + "attn.wqkv", [C, 3 * C], "matrix"),
                  (p + "attn.wo", [C, C], "matrix"), (p + "norm2", [C], "norm")]
        if is_switch(m, l):
            specs.append((p + "router", [C, E], "router"))
            for e in range(E):
                specs += [(p + "experts.%d.w1" % e, [C, F], "matrix"),
                          (p + "experts.%d.w2" % e, [F, C], "matrix")]
        else:
            specs += [(p + "ffn.w1", [C, F], "matrix"), (p + "ffn.w2", [F, C], "matrix")]
    specs += [("normf", [C], "norm"), ("lm_head", [C, V], "matrix")]
    return specs


def init_params(m, rng):
    """Weights large enough that routing is decided and gradients are far from zero:
    embeddings N(0, 0.5^2), matrices N(0, 1/fan_in), the router N(0, 4/C) so that
    softmax is peaked, norm gains 1 + N(0, 0.1^2)."""
    params = {}
    for name, shape, kind in param_specs(m):
        n = 1
        for s in shape:
            n *= s
        z = rng.normals(n)
        if kind == "embed":
            v = [0.5 * x for x in z]
        elif kind == "norm":
            v = [1.0 + 0.1 * x for x in z]
        elif kind == "router":
            v = [2.0 / math.sqrt(shape[0]) * x for x in z]
        else:
            v = [x / math.sqrt(shape[0]) for x in z]
        params[name] = torch.tensor(f32(v)).reshape(shape)
    return params


def make_tokens(B, T, rng):
    return torch.tensor([[rng.u64() % VOCAB for _ in range(T + 1)] for _ in range(B)], dtype=torch.int64)


# ---- the model (docs/design.md, "The model, exactly") ------------------------------------

def rmsnorm(x, w):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def attention(a, wqkv, wo, H):
    B, T, C = a.shape
    hd = C // H
    qkv = a @ wqkv
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    q = q.reshape(B, T, H, hd).transpose(1, 2)
    k = k.reshape(B, T, H, hd).transpose(1, 2)
    v = v.reshape(B, T, H, hd).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    o = torch.softmax(s, -1) @ v
    return o.transpose(1, 2).reshape(B, T, C) @ wo


def capacity(cf, n, E):
    return min(n, max(0, math.ceil(cf * n / E)))


MARGIN = 1e-4


def check_margins(probs, logits32, k, l):
    """Every token's k chosen experts must beat the next one by MARGIN (relative), and
    float32 logits must rank them the same: else the case depends on rounding."""
    p32 = torch.softmax(logits32, -1)
    for t in range(probs.shape[0]):
        row = sorted(probs[t].tolist(), reverse=True)
        ranks = sorted(range(probs.shape[1]), key=lambda e: (-probs[t, e].item(), e))
        ranks32 = sorted(range(probs.shape[1]), key=lambda e: (-p32[t, e].item(), e))
        for j in range(min(k, len(row) - 1)):
            if row[j] - row[j + 1] < MARGIN * row[j] or ranks[j] != ranks32[j]:
                raise SystemExit("refgen: layer %d token %d: choice %d is a near tie (%.9g vs %.9g); "
                                 "change the case's seed" % (l, t, j, row[j], row[j + 1]))


def switch(b, P, l, m, r, G):
    """One switch layer over b[B,T,C] split into G groups of consecutive rows.
    Returns (output [B,T,C], aux, z, choices [N,k] with -1 for dropped)."""
    B, T, C = b.shape
    E, k = m["n_experts"], r["top_k"]
    pre = "layers.%d." % l
    N = B * T
    n = N // G
    x = b.reshape(N, C)
    # The implementation computes the router in float32 ("selective precision"); the
    # reference computes the exact maths in float64 and makes sure no routing decision
    # of this case is close enough to a tie for float32 rounding to flip it.
    logits = x @ P[pre + "router"]
    probs = torch.softmax(logits, -1)
    lse = torch.logsumexp(logits, -1)
    check_margins(probs.detach(), x.detach().float() @ P[pre + "router"].detach().float(), k, l)
    cap = capacity(r["capacity_factor"], n, E)
    out = torch.zeros(N, C)
    choices = torch.full((N, k), -1, dtype=torch.int64)
    aux = torch.zeros(())
    z = torch.zeros(())
    pv = probs.detach().tolist()
    for g in range(G):
        t0 = g * n
        # top-k by probability; equal probabilities go to the lower expert index
        order = [sorted(range(E), key=lambda e: (-pv[t][e], e))[:k] for t in range(t0, t0 + n)]
        # capacity: every token's first choice before any second choice, tokens in order
        kept = [0] * E
        for j in range(k):
            for i in range(n):
                e = order[i][j]
                if kept[e] < cap:
                    kept[e] += 1
                    choices[t0 + i, j] = e
        # aux = E * sum_i f_i P_i (f: share of argmax before dropping, P: mean probability)
        f = torch.zeros(E)
        for i in range(n):
            f[order[i][0]] += 1.0 / n
        Pm = probs[t0:t0 + n].double().mean(0)
        aux = aux + E * (f * Pm).sum()
        z = z + (lse[t0:t0 + n].double() ** 2).mean()
    for e in range(E):
        w1, w2 = P[pre + "experts.%d.w1" % e], P[pre + "experts.%d.w2" % e]
        for j in range(k):
            idx = (choices[:, j] == e).nonzero().flatten()
            if len(idx) == 0:
                continue
            gate = probs[idx, e].double().unsqueeze(1)
            out = out.index_add(0, idx, gate * (torch.relu(x[idx] @ w1) @ w2))
    return out.reshape(B, T, C), aux / G, z / G, choices


def forward(P, tokens, m, r):
    """Returns (losses dict of tensors, {layer: choices})."""
    B = tokens.shape[0]
    T = tokens.shape[1] - 1
    inp, tgt = tokens[:, :T], tokens[:, 1:]
    h = P["wte"][inp] + P["wpe"][:T].unsqueeze(0)
    aux = torch.zeros(())
    z = torch.zeros(())
    routes = {}
    for l in range(m["n_layers"]):
        pre = "layers.%d." % l
        a = rmsnorm(h, P[pre + "norm1"])
        h = h + attention(a, P[pre + "attn.wqkv"], P[pre + "attn.wo"], m["n_heads"])
        b = rmsnorm(h, P[pre + "norm2"])
        if is_switch(m, l):
            y, al, zl, ch = switch(b, P, l, m, r, r["groups"])
            aux = aux + al
            z = z + zl
            routes[l] = ch
        else:
            y = torch.relu(b @ P[pre + "ffn.w1"]) @ P[pre + "ffn.w2"]
        h = h + y
    logits = rmsnorm(h, P["normf"]) @ P["lm_head"]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1))
    total = ce + AUX_COEF * aux + Z_COEF * z
    return {"loss_total": total, "loss_ce": ce, "loss_aux": aux, "loss_z": z}, routes


def run(P, tokens, m, r):
    """Losses (floats), routes and float64 gradients of loss_total."""
    leaves = {name: t.clone().requires_grad_(True) for name, t in P.items()}
    losses, routes = forward(leaves, tokens, m, r)
    losses["loss_total"].backward()
    grads = {name: t.grad if t.grad is not None else torch.zeros_like(t) for name, t in leaves.items()}
    return {k: v.item() for k, v in losses.items()}, routes, grads


# ---- files --------------------------------------------------------------------------------

def tensor_bytes(t, fmt):
    vals = t.flatten().tolist()
    return struct.pack("<%d%s" % (len(vals), fmt), *vals)


def build_case(name):
    """{file name: bytes} of one case, manifest.yaml included."""
    what, m, r, B, T, seed = CASES[name]
    m = dict(m, vocab=VOCAB)
    rng = Rng(0x5157C4A8D0000000 + seed)
    P = init_params(m, rng)
    tokens = make_tokens(B, T, rng)
    losses, routes, grads = run(P, tokens, m, r)
    k = r["top_k"]
    files = {"tokens.i32": tensor_bytes(tokens, "i")}
    out = ["# reference case: weights, tokens, and float64 PyTorch loss and gradients",
           "# made by tests/oracle/refgen.py (%s): %s" % (name, what), "model:"]
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "n_experts", "switch_every", "seq_len", "vocab"):
        out.append("  %s: %d" % (key, m[key]))
    out += ["routing:", "  capacity_factor: %r" % float(r["capacity_factor"]), "  groups: %d" % r["groups"],
            "  aux_loss_coef: %r" % AUX_COEF, "  z_loss_coef: %r" % Z_COEF]
    if k != 1:
        out.append("  top_k: %d" % k)
    out += ["batch:", "  size: %d" % B, "  tokens: {file: tokens.i32, shape: [%d, %d]}" % (B, T + 1), "expected:"]
    for key in ("loss_total", "loss_ce", "loss_aux", "loss_z"):
        out.append("  %s: %.12g" % (key, losses[key]))
    out.append("  routing:")
    for l in sorted(routes):
        fn = "route.%d.i32" % l
        ch = routes[l]
        if k == 1:
            files[fn] = tensor_bytes(ch[:, 0], "i")
            shape = "[%d]" % ch.shape[0]
        else:
            files[fn] = tensor_bytes(ch, "i")
            shape = "[%d, %d]" % (ch.shape[0], k)
        out.append("    - {layer: %d, file: %s, shape: %s, dropped_is: -1}" % (l, fn, shape))
    out.append("params:")
    for pname, shape, _ in param_specs(m):
        files[pname + ".f32"] = tensor_bytes(P[pname], "f")
        files[pname + ".grad.f32"] = tensor_bytes(grads[pname], "f")
        out.append("  - {name: %s, shape: [%s], file: %s.f32, grad: %s.grad.f32}" %
                   (pname, ", ".join(str(s) for s in shape), pname, pname))
    files["manifest.yaml"] = ("\n".join(out) + "\n").encode()
    return files


def write_case(root, name):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    files = build_case(name)
    for old in os.listdir(d):
        if old not in files and (old.endswith(".f32") or old.endswith(".i32")):
            os.remove(os.path.join(d, old))
    for fn, data in files.items():
        with open(os.path.join(d, fn), "wb") as f:
            f.write(data)
    return sum(len(b) for b in files.values())


# ---- checking -----------------------------------------------------------------------------

def read_manifest_numbers(text):
    vals = {}
    for line in text.splitlines():
        s = line.strip()
        for key in ("loss_total", "loss_ce", "loss_aux", "loss_z"):
            if s.startswith(key + ":"):
                vals[key] = float(s.split(":", 1)[1])
    return vals


def floats(b):
    return struct.unpack("<%df" % (len(b) // 4), b)


def rel_norm(a, b):
    d = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    n = math.sqrt(sum(y * y for y in b))
    return d / n if n > 0 else d


def check_case(root, name):
    """Regenerates one case and compares it with the files under root/name. Weights,
    tokens and routing must be identical, loss terms within 1e-10 relative, every
    gradient within 1e-6 relative (float32 storage: one unit in the last place)."""
    d = os.path.join(root, name)
    want = build_case(name)
    problems = []
    have_files = set(os.listdir(d)) if os.path.isdir(d) else set()
    if not have_files:
        return ["%s: missing (run: tests/oracle/refgen.py write %s %s)" % (d, root, name)]
    for extra in sorted(have_files - set(want)):
        problems.append("%s/%s: not made by the generator" % (d, extra))
    for fn, data in sorted(want.items()):
        path = os.path.join(d, fn)
        if fn not in have_files:
            problems.append("%s: missing" % path)
            continue
        with open(path, "rb") as f:
            have = f.read()
        if fn == "manifest.yaml":
            a, b = read_manifest_numbers(have.decode()), read_manifest_numbers(data.decode())
            for key in b:
                if key not in a or abs(a[key] - b[key]) > 1e-10 * abs(b[key]):
                    problems.append("%s: %s is %s, the generator gives %.12g" % (path, key, a.get(key), b[key]))
            strip = lambda t: [ln for ln in t.decode().splitlines() if not ln.strip().startswith("loss_")]
            if strip(have) != strip(data):
                problems.append("%s: differs from the generator's beyond the loss values" % path)
        elif fn.endswith(".grad.f32"):
            if len(have) != len(data):
                problems.append("%s: %d bytes, the generator gives %d" % (path, len(have), len(data)))
            else:
                e = rel_norm(floats(have), floats(data))
                if e > 1e-6:
                    problems.append("%s: differs from the generator's by %.2e relative" % (path, e))
        elif have != data:
            problems.append("%s: differs from the generator's" % path)
    return problems


def replay(d):
    """Recomputes a case (any producer) from its weights and tokens; prints the
    differences from its stored results. Used to check this generator against cases
    made by other tools."""
    text = open(os.path.join(d, "manifest.yaml")).read()
    import re
    def num(key):
        return float(re.search(r"^\s*%s:\s*(\S+)" % key, text, re.M).group(1))
    m = {k: int(num(k)) for k in ("d_model", "n_layers", "n_heads", "d_ff", "n_experts", "switch_every", "seq_len")}
    m["vocab"] = VOCAB
    tk = re.search(r"^\s*top_k:\s*(\d+)", text, re.M)
    r = dict(capacity_factor=num("capacity_factor"), groups=int(num("groups")), top_k=int(tk.group(1)) if tk else 1)
    shape = [int(x) for x in re.search(r"tokens: \{file: tokens.i32, shape: \[(\d+), (\d+)\]", text).groups()]
    tok = torch.tensor(struct.unpack("<%di" % (shape[0] * shape[1]),
                                     open(os.path.join(d, "tokens.i32"), "rb").read())).reshape(shape)
    P = {}
    for name, shp, _ in param_specs(m):
        P[name] = torch.tensor(floats(open(os.path.join(d, name + ".f32"), "rb").read())).reshape(shp)
    losses, routes, grads = run(P, tok, m, r)
    worst = 0.0
    for key in ("loss_total", "loss_ce", "loss_aux", "loss_z"):
        e = abs(losses[key] - num(key)) / abs(num(key))
        worst = max(worst, e)
        print("%-12s ours %.12g  stored %.12g  rel %.2e" % (key, losses[key], num(key), e))
    bad = 0
    for l, ch in routes.items():
        stored = struct.unpack("<%di" % ch.numel() if r["top_k"] > 1 else "<%di" % ch.shape[0],
                               open(os.path.join(d, "route.%d.i32" % l), "rb").read())
        ours = ch.flatten().tolist() if r["top_k"] > 1 else ch[:, 0].tolist()
        diff = sum(a != b for a, b in zip(ours, stored))
        bad += diff
        print("routing layer %d: %d differences" % (l, diff))
    gworst, gname = 0.0, ""
    for name, _, _ in param_specs(m):
        ref = floats(open(os.path.join(d, name + ".grad.f32"), "rb").read())
        e = rel_norm(grads[name].flatten().tolist(), ref)
        if e > gworst:
            gworst, gname = e, name
    print("worst gradient: %s %.2e" % (gname, gworst))
    return 0 if worst < 1e-9 and bad == 0 and gworst < 1e-6 else 1


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    cmd, rest = argv[1], argv[2:]
    if cmd == "list":
        for name, c in CASES.items():
            print("%-14s %s" % (name, c[0]))
        return 0
    if cmd == "replay" and len(rest) == 1:
        return replay(rest[0])
    if cmd in ("write", "check") and rest:
        root, names = rest[0], rest[1:] or list(CASES)
        unknown = [n for n in names if n not in CASES]
        if unknown:
            sys.stderr.write("refgen: unknown case %s (known: %s)\n" % (", ".join(unknown), ", ".join(CASES)))
            return 2
        if cmd == "write":
            for n in names:
                print("%-14s %7d bytes  %s" % (n, write_case(root, n), CASES[n][0]))
            return 0
        if not os.path.isdir(root):
            sys.stderr.write("refgen: %s: no such directory\n" % root)
            return 1
        failed = 0
        if not rest[1:]:
            stray = sorted(d for d in os.listdir(root)
                           if os.path.isdir(os.path.join(root, d)) and d not in CASES)
            for d in stray:
                print("%-14s DIFFERS\n  %s: a case the generator does not make" % (d, os.path.join(root, d)))
            failed += len(stray)
        for n in names:
            problems = check_case(root, n)
            print("%-14s %s" % (n, "agrees" if not problems else "DIFFERS"))
            for p in problems:
                print("  " + p)
            failed += bool(problems)
        return 1 if failed else 0
    sys.stderr.write("refgen: unknown command line (try --help)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
