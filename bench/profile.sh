#!/usr/bin/env bash
# Where a training step's time goes, by kernel: samples `switchyard bench` with perf
# (Debian's linux-perf; installed here when run as root) after start-up, and sums the
# self time by kind: sgemm arithmetic, sgemm packing, switchyard's own element-wise
# kernels, memory fills, the kernel (scheduler, page faults).
# Usage: bench/profile.sh [THREADS] [STEPS]   (defaults 1 and 6)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
BIN=${SY_BUILD_DIR:-build}/bin
THREADS=${1:-1}
STEPS=${2:-6}
if ! command -v perf >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
  else
    echo "profile: needs perf: sudo apt-get install -y linux-perf" >&2
    exit 1
  fi
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "${tmp:?}"' EXIT
# -D: skip start-up (weights, the sgemm probes); cpu-clock works where hardware counters do not
perf record -q -e cpu-clock -F 999 -D 4000 -o "$tmp/perf.data" -- \
  "$BIN/switchyard" bench configs/bench.yaml --threads "$THREADS" --steps "$STEPS" --warmup 1
perf report -i "$tmp/perf.data" --stdio --no-children --sort sym 2>/dev/null | grep -E '^ +[0-9.]+%' > "$tmp/syms"
/usr/bin/python3 - "$tmp/syms" <<'PY'
import re, sys, collections
kinds = [("sgemm arithmetic", r"sgemm_(small_)?kernel"), ("sgemm packing (copies, beta)", r"sgemm_\w*(copy|beta)"),
         ("softmax + expf (attention)", r"sy_softmax_row|expf"), ("memset / memmove", r"mem(set|move|cpy)"),
         ("rmsnorm", r"sy_rmsnorm"), ("optimizer (AdamW, grad norm)", r"adamw|sy_sumsq"),
         ("cross-entropy (exp, log)", r"sy_crossentropy|__ieee754_exp|__ieee754_log|exp@|exp_fma"),
         ("relu", r"sy_relu"), ("attention dS, model loops, routing", r"sy_attention|sy_model_|sy_axpy|sy_router|switch_"),
         ("kernel: scheduler, interrupts, page faults", r"\[k\]"), ("start-up left in the window", r"init_weights|cos_fma")]
tot = collections.OrderedDict((k, 0.0) for k, _ in kinds)
other = 0.0
for line in open(sys.argv[1]):
    pct = float(line.split("%")[0])
    for k, rx in kinds:
        if re.search(rx, line):
            tot[k] += pct
            break
    else:
        other += pct
print("| kind | share of samples |")
print("|---|---|")
for k, v in tot.items():
    print(f"| {k} | {v:.1f}% |")
print(f"| other | {other:.1f}% |")
PY
