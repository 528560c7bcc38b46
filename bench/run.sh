#!/usr/bin/env bash
# Produces the README's performance table on this machine, side by side in one run.
# Usage: bench/run.sh [STEPS]   (builds first; needs `switchyard prepare` data or uses random bytes)
# Every row prints the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
BIN=${SY_BUILD_DIR:-build}/bin
STEPS=${1:-12}
out=$(mktemp -d) || exit 1; trap 'rm -rf -- "${out:?}"' EXIT
row() { printf '| %s | %s | `%s` |\n' "$1" "$2" "$3"; }

echo "| measurement | result | command |"
echo "|---|---|---|"
# single process, threads = cores
cmd="$BIN/switchyard bench configs/bench.yaml --steps $STEPS --json"
j=$($cmd 2>/dev/null)
get() { echo "$j" | sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '"'; }
row "single process, $(get threads) threads ($(get kernel) kernel): tokens/s" "$(get tokens_per_s)" "$cmd"
row "  step time: forward / backward / optimizer (ms)" "$(get forward_ms) / $(get backward_ms) / $(get optimizer_ms)" "same"
row "  model FLOPs/token; achieved GFLOP/s; sgemm peak; MFU" "$(get flops_per_token); $(get achieved_gflops); $(get sgemm_peak_gflops); $(get mfu)" "same"
row "  peak RSS / bytes it must hold" "$(get peak_rss_bytes) / $(get model_bytes) ($(get rss_ratio)x)" "same"
single=$(get tokens_per_s)

# 2 local workers, 1 thread each: median tokens/s over the steps after warm-up, from the run log
cmd="$BIN/switchyard up configs/bench.yaml --workers 2 --fresh --set train.steps=$((STEPS + 3)) --set checkpoint.dir=$out/up2 --set checkpoint.every=0 --set train.eval_batches=1"
$cmd > "$out/up2.log" 2>&1 || { tail -20 "$out/up2.log"; exit 1; }
stats=$(python3 - "$out/up2/run_log.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
rows = rows[3:] or rows
med = lambda k: statistics.median(r[k] for r in rows)
print(f"{med('tokens_per_s'):.0f} {med('step_ms'):.0f} {med('compute_ms'):.0f} {med('alltoall_ms'):.0f} {med('allreduce_ms'):.0f}")
PY
)
read -r tps2 step2 comp2 a2a2 ar2 <<< "$stats"
row "2 workers x 1 thread (switchyard up): tokens/s" "$tps2 ($(python3 -c "print(f'{$tps2/$single*100:.0f}%')") of single)" "$cmd"
row "  step time: total / compute / all-to-all / all-reduce (ms)" "$step2 / $comp2 / $a2a2 / $ar2" "same"

for w in fp32 bf16; do
  cmd="$BIN/switchyard bench allreduce --size 16M --workers 2 --wire $w --iters 20 --json"
  j=$($cmd 2>/dev/null)
  row "all-reduce 16 MiB, 2 processes, $w wire: algorithm / bus GB/s; bytes sent per rank" "$(get algbw_gbs) / $(get busbw_gbs); $(get bytes_sent_per_rank)" "$cmd"
done
cmd="$BIN/switchyard bench alltoall --size 16M --workers 2 --iters 20 --json"
j=$($cmd 2>/dev/null)
row "all-to-all 16 MiB, 2 processes: algorithm / bus GB/s" "$(get algbw_gbs) / $(get busbw_gbs)" "$cmd"
