#!/usr/bin/python3
"""Bytes on the wire per step and predicted tokens/s of switchyard (docs/scaling.md).

  bench/scaling_model.py check RUN_LOG.jsonl UP_OUTPUT WORKERS
      measured bytes per step (the run log's bytes_sent, summed over workers) against the
      formulas, for a run of configs/bench.yaml on WORKERS workers; the routed rows come
      from the expert-load table in the output of the same `switchyard up`
  bench/scaling_model.py predict [--compute-ms MS] [--alpha-us US] [--ceiling-gbs GBS]
      tokens/s for 8, 32 and 128 workers on 10 and 100 Gbit/s

Only the standard library; the formulas are the ones docs/scaling.md derives.
"""
import argparse
import json
import re
import statistics

# configs/bench.yaml
BENCH = dict(C=256, L=4, every=2, F=1024, E=8, V=256, Tmax=256, k=1, B=16, T=256)


def switch_layers(m):
    return sum(1 for l in range(m["L"]) if m["every"] > 0 and l % m["every"] == m["every"] - 1)


def dense_floats(m):
    """D: the replicated parameters (all but the experts), all-reduced over every worker."""
    C, F, E, V, Tmax, L = m["C"], m["F"], m["E"], m["V"], m["Tmax"], m["L"]
    Ls = switch_layers(m)
    return V * C + Tmax * C + L * (2 * C + 4 * C * C) + (L - Ls) * 2 * C * F + Ls * C * E + C + C * V


def mesh(W, E):
    """P expert ranks per data group (largest divisor of W that is <= E), D = W / P groups."""
    P = max(p for p in range(1, min(W, E) + 1) if W % p == 0)
    return P, W // P


def split(total, n):
    return [total * (i + 1) // n - total * i // n for i in range(n)]


def allreduce_bytes(W, m, w=4):
    """All ranks together, per step: the dense ring over W ranks, plus the experts' ring over
    the D replicas of each expert when D > 1."""
    P, D = mesh(W, m["E"])
    dense = 2 * (W - 1) * dense_floats(m) * w
    expert_floats_per_rank = (m["E"] // P) * switch_layers(m) * 2 * m["C"] * m["F"]
    experts = W * 2 * (D - 1) / D * expert_floats_per_rank * w if D > 1 else 0
    return dense + experts


def alltoall_bytes(W, m, kept, w=4):
    """All ranks together, per step: per switch layer, the rows a rank routes to experts held
    elsewhere in its data group go out and come back in the forward pass and again in the
    backward pass (4 x C x w bytes a row) plus the row's token index (8 bytes, forward
    dispatch), plus each rank's expert counts to every other rank (4 bytes an expert)."""
    P, D = mesh(W, m["E"])
    rows = split(m["B"], W)               # equal shares: batch rows per rank
    experts = split(m["E"], P)            # experts per index p
    N = m["B"] * m["T"]
    off = sum(rows[r] * m["T"] / N * (1 - experts[r % P] / m["E"]) for r in range(W))  # uniform routing
    routed = m["k"] * kept * N * off
    counts = D * 4 * m["E"] * (P - 1)
    return switch_layers(m) * (routed * (4 * m["C"] * w + 8) + counts)


def routed_off_rank(W, m, up_log):
    """Rows per step that leave their rank, summed over switch layers, from the expert-load
    table `switchyard up` prints at the end of a run (per expert: share of routed choices /
    drop rate), assuming every rank's tokens pick experts with those shares."""
    P, D = mesh(W, m["E"])
    rows = split(m["B"], W)
    ebounds = [0]
    for n in split(m["E"], P):
        ebounds.append(ebounds[-1] + n)
    N = m["B"] * m["T"]
    total = 0.0
    for line in open(up_log):
        if not re.match(r"layer \d+ ", line):
            continue
        kept = {int(e): float(sh) / 100 * (1 - float(dr) / 100)
                for e, sh, dr in re.findall(r"e(\d+)\s+([\d.]+)%/([\d.]+)%", line)}
        for r in range(W):
            p = r % P
            mine = range(ebounds[p], ebounds[p + 1])
            total += m["k"] * N * rows[r] / m["B"] * sum(v for e, v in kept.items() if e not in mine)
    return total


def check(args):
    rows = [json.loads(l) for l in open(args.log) if '"bytes_sent"' in l]
    # the mean over every step, as the load table `up` prints is over the whole run
    meas = statistics.mean(r["bytes_sent"] for r in rows)
    m = BENCH
    P, D = mesh(args.workers, m["E"])
    ar = allreduce_bytes(args.workers, m)
    off = routed_off_rank(args.workers, m, args.up_log)
    a2a = off * (4 * m["C"] * 4 + 8) + switch_layers(m) * D * 4 * m["E"] * (P - 1)
    print(json.dumps({"workers": args.workers, "steps": len(rows), "measured_bytes_per_step": round(meas),
                      "predicted_allreduce": round(ar), "predicted_alltoall": round(a2a),
                      "rows_off_rank_per_step": round(off), "predicted_total": round(ar + a2a),
                      "measured_over_predicted": round(meas / (ar + a2a), 4),
                      "alltoall_ms": statistics.median(r["alltoall_ms"] for r in rows),
                      "allreduce_ms": statistics.median(r["allreduce_ms"] for r in rows),
                      "compute_ms": statistics.median(r["compute_ms"] for r in rows),
                      "step_ms": statistics.median(r["step_ms"] for r in rows)}))


def predict(args):
    """Weak scaling: every worker keeps the 2-worker share (8 rows x 256 tokens) and its
    compute time; no overlap of communication with compute (as the step is today)."""
    alpha, o = args.alpha_us * 1e-6, args.per_message_us * 1e-6
    tc = args.compute_ms * 1e-3
    print("| workers | scenario | P x D | MB/step/worker (all-reduce + all-to-all) | "
          "10 Gbit/s: comm ms, tokens/s, efficiency | 100 Gbit/s: comm ms, tokens/s, efficiency |")
    print("|---|---|---|---|---|---|")
    for W in (8, 32, 128):
        for name, E in (("E = 8 (bench model)", 8), ("E = 4W", 4 * W)):
            m = dict(BENCH, E=E, B=8 * W)
            P, D = mesh(W, E)
            ar, a2a = allreduce_bytes(W, m) / W, alltoall_bytes(W, m, args.kept) / W
            cells = []
            for gbit in (10, 100):
                bw = min(gbit / 8, args.ceiling_gbs) * 1e9  # bytes/s a worker can push
                steps_ar = 2 * (W - 1) + (2 * (D - 1) if D > 1 else 0)
                t_ar = ar / bw + steps_ar * alpha
                t_a2a = a2a / bw + switch_layers(m) * 4 * (alpha + (P - 1) * o)
                t = tc + t_ar + t_a2a
                tps = W * 8 * m["T"] / t
                cells.append(f"{(t_ar + t_a2a) * 1e3:.0f}, {tps:,.0f}, {tc / t * 100:.0f}%")
            print(f"| {W} | {name} | {P} x {D} | {ar / 1e6:.1f} + {a2a / 1e6:.1f} | {cells[0]} | {cells[1]} |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("log")
    c.add_argument("up_log")
    c.add_argument("workers", type=int)
    p = sub.add_parser("predict")
    p.add_argument("--compute-ms", type=float, default=600.0, help="one worker's step without communication")
    p.add_argument("--kept", type=float, default=0.9, help="fraction of routed tokens within capacity")
    p.add_argument("--alpha-us", type=float, default=50.0, help="latency of one message across the network")
    p.add_argument("--per-message-us", type=float, default=10.0, help="sender cost of one more message")
    p.add_argument("--ceiling-gbs", type=float, default=2.5, help="GB/s one worker's ZeroMQ sockets reach")
    a = ap.parse_args()
    if a.cmd == "check":
        check(a)
    else:
        predict(a)


if __name__ == "__main__":
    main()
