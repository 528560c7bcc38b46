#!/usr/bin/python3
"""The PyTorch peer of `switchyard bench`: the same Switch Transformer (DESIGN.md, "The
model, exactly"), the same batch, the same AdamW with clipping, timed the same way
(median step after warm-up, forward / backward / optimizer split).

  bench/torch_model.py --like SWITCHYARD_JSON [--steps N] [--warmup N] [--threads N]

SWITCHYARD_JSON is one line of `switchyard bench --json` (a file name, or '-' for stdin):
every shape, routing constant and optimizer setting is taken from it, so both sides
train the same model. Prints one JSON line: tokens/s, phase times, the parameter count
and the model FLOPs per token by switchyard's formula, and the FLOPs the forward pass
actually ran as counted by the PyTorch profiler (x3 for forward + backward).

Written for Debian's python3-torch (1.13): no scaled_dot_product_attention, so the
attention is the usual masked softmax(q k^T) v; experts run on the tokens routed to them
(index_select / index_add), which is how a careful PyTorch MoE layer does it on CPU.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def trunc_normal(shape, fan_in, init_scale):
    std = math.sqrt(init_scale / fan_in)
    return torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std)


class SwitchLM(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        C, V, Fh, E, L = c["d_model"], c["vocab"], c["d_ff"], c["n_experts"], c["n_layers"]
        s = c["init_scale"]
        P = torch.nn.Parameter
        self.wte = P(trunc_normal((V, C), C, s))
        self.wpe = P(trunc_normal((c["model_seq_len"], C), C, s))
        self.layers = torch.nn.ModuleList()
        for l in range(L):
            m = torch.nn.Module()
            m.norm1 = P(torch.ones(C))
            m.wqkv = P(trunc_normal((C, 3 * C), C, s))
            m.wo = P(trunc_normal((C, C), C, s))
            m.norm2 = P(torch.ones(C))
            m.switch = self.is_switch(l)
            if m.switch:
                m.router = P(trunc_normal((C, E), C, s))
                m.ew1 = P(trunc_normal((E, C, Fh), C, s))
                m.ew2 = P(trunc_normal((E, Fh, C), Fh, s))
            else:
                m.w1 = P(trunc_normal((C, Fh), C, s))
                m.w2 = P(trunc_normal((Fh, C), Fh, s))
            self.layers.append(m)
        self.normf = P(torch.ones(C))
        self.lm_head = P(trunc_normal((C, V), C, s))

    def is_switch(self, l):
        se = self.c["switch_every"]
        return se > 0 and self.c["n_experts"] > 0 and l % se == se - 1

    @staticmethod
    def rmsnorm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def attention(self, a, m, B, T):
        C, H = self.c["d_model"], self.c["n_heads"]
        hd = C // H
        qkv = (a @ m.wqkv).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3,B,H,T,hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        s = s.masked_fill(self.causal[:T, :T], float("-inf"))
        o = F.softmax(s, dim=-1) @ v  # [B,H,T,hd]
        return o.transpose(1, 2).reshape(B * T, C) @ m.wo

    def switch(self, b, m):
        """top-1 switch layer over one group (the whole batch); router in float32."""
        N = b.shape[0]
        E, k = self.c["n_experts"], self.c["top_k"]
        assert k == 1, "the peer implements top-1 (the Switch Transformer)"
        logits = b.float() @ m.router.float()
        probs = F.softmax(logits, dim=-1)
        gate, idx = probs.max(dim=-1)
        cap = min(N, math.ceil(self.c["capacity_factor"] * N / E))
        onehot = F.one_hot(idx, E)
        # tokens claim slots in order; one past capacity is dropped
        pos = (onehot.cumsum(0) * onehot).sum(-1) - 1
        keep = pos < cap
        frac = onehot.float().mean(0)
        aux = E * (frac * probs.mean(0)).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        out = torch.zeros_like(b)
        for e in range(E):
            rows = ((idx == e) & keep).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            h = F.relu(b.index_select(0, rows) @ m.ew1[e]) @ m.ew2[e]
            out = out.index_add(0, rows, h * gate.index_select(0, rows).unsqueeze(1))
        return out, aux, z

    def forward(self, x, y):
        B, T = x.shape
        C = self.c["d_model"]
        h = (self.wte[x] + self.wpe[:T]).view(B * T, C)
        aux = z = 0.0
        for m in self.layers:
            h = h + self.attention(self.rmsnorm(h, m.norm1), m, B, T)
            b = self.rmsnorm(h, m.norm2)
            if m.switch:
                o, a_, z_ = self.switch(b, m)
                aux, z = aux + a_, z + z_
            else:
                o = F.relu(b @ m.w1) @ m.w2
            h = h + o
        logits = self.rmsnorm(h, self.normf) @ self.lm_head
        ce = F.cross_entropy(logits, y.reshape(-1))
        return ce + self.c["aux_loss_coef"] * aux + self.c["z_loss_coef"] * z


def flops_formula(c, T):
    """switchyard's sy_model_flops_per_token (common/model.c), written out again."""
    C, Fh, E, V = c["d_model"], c["d_ff"], c["n_experts"], c["vocab"]
    f = 2.0 * C * V
    for l in range(c["n_layers"]):
        f += 2.0 * C * 3 * C + 2.0 * C * C + 2.0 * 2.0 * T * C
        se = c["switch_every"]
        if se > 0 and E > 0 and l % se == se - 1:
            f += 2.0 * C * E + c["top_k"] * 2.0 * 2.0 * C * Fh
        else:
            f += 2.0 * 2.0 * C * Fh
    return 3.0 * f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--like", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    src = sys.stdin if args.like == "-" else open(args.like)
    c = json.loads(src.read().strip().splitlines()[-1])
    threads = args.threads or c["threads"]
    torch.set_num_threads(threads)
    torch.manual_seed(c["seed"])
    B, T = c["batch"], c["seq"]
    model = SwitchLM(c)
    model.causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"], foreach=True)
    nparams = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(c["seed"])

    # the FLOPs the forward pass runs, counted by the profiler (matmuls only)
    xb = torch.randint(0, c["vocab"], (B, T + 1), generator=gen)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        with torch.no_grad():
            model(xb[:, :-1], xb[:, 1:])
    counted = sum(e.flops for e in prof.key_averages() if e.flops) * 3 / (B * T)

    st, fw, bw, op = [], [], [], []
    for s in range(args.warmup + args.steps):
        xb = torch.randint(0, c["vocab"], (B, T + 1), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(xb[:, :-1], xb[:, 1:])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        t3 = time.perf_counter()
        if not math.isfinite(loss.item()):
            sys.exit(f"torch_model: loss {loss.item()} at step {s}")
        if s >= args.warmup:
            st.append(t3 - t0)
            fw.append(t1 - t0)
            bw.append(t2 - t1)
            op.append(t3 - t2)
    med = statistics.median(st)
    print(json.dumps({
        "mode": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": B, "seq": T,
        "steps": args.steps, "tokens_per_s": round(B * T / med, 1), "step_ms": round(med * 1e3, 2),
        "forward_ms": round(statistics.median(fw) * 1e3, 2), "backward_ms": round(statistics.median(bw) * 1e3, 2),
        "optimizer_ms": round(statistics.median(op) * 1e3, 2), "params": nparams,
        "flops_per_token": flops_formula(c, T), "flops_per_token_counted": round(counted),
        "final_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
