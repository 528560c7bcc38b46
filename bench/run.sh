#!/usr/bin/env bash
# Produces the README's performance table on this machine: switchyard and PyTorch side by
# side in one invocation, interleaved round by round (the order flips every round, so a
# busy moment hits both sides alike), every figure the median over the rounds and every
# ratio taken from this one run.
# Usage: bench/run.sh [STEPS] [ROUNDS]   (defaults 10 and 3; builds first; prepares the
# corpus `switchyard up` trains on when there is none)
# Every row names the command that reproduces it. Needs Debian's python3-torch for the
# PyTorch column (installed here when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
BIN=${SY_BUILD_DIR:-build}/bin
STEPS=${1:-10}
ROUNDS=${2:-3}
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bench: installing python3-torch (the PyTorch peer)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch >/dev/null
  else
    echo "bench: the PyTorch peer needs Debian's python3-torch: sudo apt-get install -y python3-torch" >&2
    exit 1
  fi
fi
[ -f data/train.bin ] || "$BIN/switchyard" prepare >/dev/null # `up` trains on the prepared corpus
out=$(mktemp -d) || exit 1
# SY_BENCH_RAW=DIR keeps every measurement (one JSON line each) for a second look
trap '[ -z "${SY_BENCH_RAW:-}" ] || { mkdir -p "$SY_BENCH_RAW" && cp "$out"/*.jsonl "$SY_BENCH_RAW"/; }; rm -rf "${out:?}"' EXIT
threads=$(nproc)

# one measurement = one JSON line appended to $out/NAME.jsonl
sy_single() { "$BIN/switchyard" bench configs/bench.yaml --steps "$STEPS" --threads "$threads" --json 2>/dev/null \
                >> "$out/sy_single.jsonl"; }
torch_single() { # the PyTorch peer copies its model from switchyard's JSON line
  [ -s "$out/sy_single.jsonl" ] || "$BIN/switchyard" bench configs/bench.yaml --steps 1 --warmup 0 --json \
      2>/dev/null > "$out/sy_single.jsonl.first"
  cat "$out"/sy_single.jsonl* | tail -n1 > "$out/like.json"
  OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
    "$PY" bench/torch_model.py --like "$out/like.json" --steps "$STEPS" --threads "$threads" >> "$out/torch_single.jsonl"
}
sy_up2() { up2 "$1" sy_up2; }
up2() {
  local dir="$out/up2.$1"
  "$BIN/switchyard" up configs/bench.yaml --workers 2 --fresh --set train.steps=$((STEPS + 3)) \
      --set checkpoint.dir="$dir" --set checkpoint.every=0 --set train.eval_batches=1 > "$dir.log" 2>&1 ||
    { tail -20 "$dir.log" >&2; exit 1; }
  # the steps after warm-up, from the run log
  "$PY" - "$dir/run_log.jsonl" >> "$out/$2.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
rows = rows[3:] or rows
med = lambda k: statistics.median(r[k] for r in rows)
keys = ["tokens_per_s", "step_ms", "compute_ms", "alltoall_ms", "allreduce_ms"]
keys += [k for k in ("optimizer_ms", "replica_ms") if all(k in r for r in rows)]
if "bytes_sent" in rows[0]:
    keys.append("bytes_sent")
print(json.dumps({k: med(k) for k in keys}))
PY
}
# BASE_BIN=DIR (optional): another build's bin/ (e.g. of the previous commit), measured in the
# same rounds, for "before / after" ratios taken from the same minutes of the machine
base_single() { [ -z "${BASE_BIN:-}" ] || "$BASE_BIN/switchyard" bench configs/bench.yaml --steps "$STEPS" \
                  --threads "$threads" --json 2>/dev/null >> "$out/base_single.jsonl"; }
base_up2() { [ -z "${BASE_BIN:-}" ] || BIN=$BASE_BIN up2 "base.$1" base_up2; }
sy_coll() { "$BIN/switchyard" bench "$1" --size 16M --workers 2 --iters 20 ${2:+--wire $2} --json 2>/dev/null \
              >> "$out/sy_$1${2:+_$2}.jsonl"; }
base_coll() { [ -z "${BASE_BIN:-}" ] || "$BASE_BIN/switchyard" bench "$1" --size 16M --workers 2 --iters 20 \
                ${2:+--wire $2} --json 2>/dev/null >> "$out/base_$1${2:+_$2}.jsonl"; }
torch_coll() { "$PY" bench/torch_collectives.py "$1" --size 16M --workers 2 --iters 20 >> "$out/torch_$1.jsonl"; }

for r in $(seq 1 "$ROUNDS"); do
  echo "bench: round $r of $ROUNDS (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  if [ $((r % 2)) = 1 ]; then
    sy_single; torch_single; base_single; sy_up2 "$r"; base_up2 "$r"
    sy_coll allreduce; torch_coll allreduce; base_coll allreduce; sy_coll allreduce bf16; base_coll allreduce bf16
    sy_coll alltoall; torch_coll alltoall; base_coll alltoall
  else
    base_single; torch_single; sy_single; base_up2 "$r"; sy_up2 "$r"
    torch_coll allreduce; sy_coll allreduce; sy_coll allreduce bf16; torch_coll alltoall; sy_coll alltoall
  fi
done

"$PY" - "$out" "$BIN" "$STEPS" "$ROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, statistics, sys
out, BIN, STEPS, ROUNDS, load = sys.argv[1:]
def rows(name):
    return [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
def med(name, key):
    return statistics.median(r[key] for r in rows(name))
def ratio(a, b, key):  # median over rounds of the per-round ratio
    return statistics.median(x[key] / y[key] for x, y in zip(rows(a), rows(b)))
s, t = rows("sy_single")[0], rows("torch_single")[0]
print(f"bench: {ROUNDS} alternating rounds of {STEPS} steps; load average at the end {load}")
print(f"bench: parameters: switchyard {s['params']:,}, PyTorch {t['params']:,}"
      f" ({'the same' if s['params'] == t['params'] else 'DIFFERENT'})")
print(f"bench: model FLOPs/token: switchyard {s['flops_per_token']:,.0f}, PyTorch (same formula) "
      f"{t['flops_per_token']:,.0f}; PyTorch profiler counted {t['flops_per_token_counted']:,.0f} "
      f"(forward matmuls x3: experts run only on kept tokens)")
print()
def f(x, d=0):
    return f"{x:,.{d}f}"
print("| measurement | switchyard | PyTorch 1.13 | switchyard / PyTorch | command |")
print("|---|---|---|---|---|")
def row5(m, a, b, r, c):
    print(f"| {m} | {a} | {b} | {r} | `{c}` |")
th = s["threads"]
row5(f"single process, {th} threads: tokens/s", f(med("sy_single", "tokens_per_s")),
     f(med("torch_single", "tokens_per_s")), f"{ratio('sy_single', 'torch_single', 'tokens_per_s'):.2f}x",
     f"switchyard bench configs/bench.yaml --steps {STEPS}; bench/torch_model.py")
row5("&nbsp; forward / backward / optimizer per step (ms)",
     " / ".join(f(med("sy_single", k)) for k in ("forward_ms", "backward_ms", "optimizer_ms")),
     " / ".join(f(med("torch_single", k)) for k in ("forward_ms", "backward_ms", "optimizer_ms")), "", "same")
row5("&nbsp; model FLOPs/token; achieved GFLOP/s; sgemm here; MFU",
     f"{s['flops_per_token'] / 1e6:.1f} M; {f(med('sy_single', 'achieved_gflops'))}; "
     f"{f(med('sy_single', 'sgemm_peak_gflops'))}; {med('sy_single', 'mfu') * 100:.0f}%",
     f"{t['flops_per_token'] / 1e6:.1f} M; {f(med('torch_single', 'tokens_per_s') * t['flops_per_token'] / 1e9)}",
     "", "same")
row5("&nbsp; peak RSS vs weights + grads + AdamW + activations",
     f"{med('sy_single', 'peak_rss_bytes') / 1e6:.0f} MB vs {s['model_bytes'] / 1e6:.0f} MB", "", "", "same")
u = rows("sy_up2")
share = statistics.median(a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(u, rows("sy_single")))
row5("2 workers x 1 thread (`switchyard up`): tokens/s", f"{f(med('sy_up2', 'tokens_per_s'))} "
     f"({share * 100:.0f}% of one process)", "", f"{statistics.median(a['tokens_per_s'] / b['tokens_per_s'] for a, b in zip(u, rows('torch_single'))):.2f}x",
     "switchyard up configs/bench.yaml --workers 2")
extra = f"; {med('sy_up2', 'bytes_sent') / 2 / 1e6:.1f} MB sent per worker" if "bytes_sent" in u[0] else ""
row5("&nbsp; per step: total / compute / all-to-all / all-reduce (ms)",
     " / ".join(f(med("sy_up2", k)) for k in ("step_ms", "compute_ms", "alltoall_ms", "allreduce_ms")) + extra,
     "", "", "same")
for op, name in (("allreduce", "all-reduce"), ("alltoall", "all-to-all")):
    row5(f"{name} 16 MiB, 2 processes (fp32): algorithm / bus GB/s",
         f"{med('sy_' + op, 'algbw_gbs'):.2f} / {med('sy_' + op, 'busbw_gbs'):.2f}",
         f"{med('torch_' + op, 'algbw_gbs'):.2f} / {med('torch_' + op, 'busbw_gbs'):.2f} (gloo)",
         f"{ratio('sy_' + op, 'torch_' + op, 'algbw_gbs'):.2f}x",
         f"switchyard bench {op} --size 16M --workers 2; bench/torch_collectives.py {op}")
    if op == "allreduce":
        row5("all-reduce 16 MiB, 2 processes, bf16 wire: algorithm / bus GB/s",
             f"{med('sy_allreduce_bf16', 'algbw_gbs'):.2f} / {med('sy_allreduce_bf16', 'busbw_gbs'):.2f}", "",
             f"{ratio('sy_allreduce_bf16', 'torch_allreduce', 'algbw_gbs'):.2f}x",
             "switchyard bench allreduce --size 16M --workers 2 --wire bf16")
import os
if os.path.exists(f"{out}/base_single.jsonl"):
    print()
    print("before / after, the same rounds (BASE_BIN):")
    for k in ("tokens_per_s", "forward_ms", "backward_ms", "optimizer_ms"):
        print(f"  single process {k}: before {f(med('base_single', k))}, after {f(med('sy_single', k))}, "
              f"after/before {ratio('sy_single', 'base_single', k):.2f}")
    for k in ("tokens_per_s", "step_ms", "compute_ms", "alltoall_ms", "allreduce_ms"):
        print(f"  2 workers {k}: before {f(med('base_up2', k))}, after {f(med('sy_up2', k))}, "
              f"after/before {ratio('sy_up2', 'base_up2', k):.2f}")
    for op in ("allreduce", "allreduce_bf16", "alltoall"):
        print(f"  {op} 16 MiB algorithm GB/s: before {med('base_' + op, 'algbw_gbs'):.2f}, "
              f"after {med('sy_' + op, 'algbw_gbs'):.2f}, after/before {ratio('sy_' + op, 'base_' + op, 'algbw_gbs'):.2f}")
    print("  per round, single tokens/s before: " + ", ".join(f(r["tokens_per_s"]) for r in rows("base_single")))
print()
print("per round (tokens/s): switchyard " + ", ".join(f(r["tokens_per_s"]) for r in rows("sy_single")) +
      "; PyTorch " + ", ".join(f(r["tokens_per_s"]) for r in rows("torch_single")) +
      "; 2 workers " + ", ".join(f(r["tokens_per_s"]) for r in u))
PY
