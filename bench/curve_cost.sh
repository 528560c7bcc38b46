#!/usr/bin/env bash
# The cost of CURVE, side by side in one run: tokens/s of the bench model on 2 workers
# (switchyard up, CURVE on by default vs --insecure) and all-reduce GB/s of 16 MiB between
# 2 processes (bench allreduce with and without --curve). The two settings alternate,
# ROUNDS times (default 3), and the medians are printed as README table rows.
# Usage: bench/curve_cost.sh [ROUNDS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SY_BUILD_DIR:-build}/bin
ROUNDS=${1:-3}
STEPS=${2:-12}
out=$(mktemp -d) || exit 1
trap 'rm -rf "${out:?}"' EXIT
tps() { # median tokens/s of a run log after 3 warm-up steps
  /usr/bin/python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
rows = rows[3:] or rows
print(f"{statistics.median(r['tokens_per_s'] for r in rows):.0f}")
PY
}
gbs() { sed -n 's/.*"algbw_gbs":\([0-9.]*\).*/\1/p'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
up_c=() up_i=() ar_c=() ar_i=()
for r in $(seq 1 "$ROUNDS"); do
  for mode in curve insecure; do
    flag=(); [ $mode = insecure ] && flag=(--insecure)
    "$BIN/switchyard" up configs/bench.yaml --workers 2 --fresh "${flag[@]}" --set train.steps=$((STEPS + 3)) \
      --set checkpoint.dir="$out/$mode$r" --set checkpoint.every=0 --set train.eval_batches=1 > "$out/$mode$r.log" 2>&1 ||
      { tail -20 "$out/$mode$r.log"; exit 1; }
    t=$(tps "$out/$mode$r/run_log.jsonl")
    cflag=(); [ $mode = curve ] && cflag=(--curve)
    g=$("$BIN/switchyard" bench allreduce --size 16M --workers 2 --iters 20 --json "${cflag[@]}" 2> /dev/null | gbs)
    echo "round $r $mode: $t tokens/s, all-reduce $g GB/s" >&2
    if [ $mode = curve ]; then up_c+=("$t"); ar_c+=("$g"); else up_i+=("$t"); ar_i+=("$g"); fi
  done
done
echo "| 2 workers (switchyard up, bench model): tokens/s, CURVE / --insecure | $(med "${up_c[@]}") / $(med "${up_i[@]}") | \`switchyard up configs/bench.yaml --workers 2 [--insecure]\` |"
echo "| all-reduce 16 MiB, 2 processes, fp32 wire: GB/s, CURVE / plain | $(med "${ar_c[@]}") / $(med "${ar_i[@]}") | \`switchyard bench allreduce --size 16M --workers 2 [--curve]\` |"
echo "(medians of $ROUNDS alternating rounds; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
