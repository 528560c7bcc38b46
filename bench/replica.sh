#!/usr/bin/env bash
# The cost of buddy replicas (issue 14): `switchyard up configs/bench.yaml --workers 2`
# with cluster.replica_every 1 and 0, alternating, PAIRS pairs (default 3); per run the
# median tokens/s over the steps after warm-up (run log) and the workers' peak RSS (each
# worker logs its own at exit; the larger of the two); then the medians.
# Usage: bench/replica.sh [PAIRS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SY_BUILD_DIR:-build}/bin
pairs=${1:-3} steps=${2:-15}
out=$(mktemp -d) || exit 1
trap 'rm -rf "${out:?}"' EXIT
declare -A tps rss
for i in $(seq 1 "$pairs"); do
  for k in 1 0; do
    d=$out/r$k.$i
    "$BIN/switchyard" up configs/bench.yaml --workers 2 --fresh \
      --set train.steps="$steps" --set checkpoint.dir="$d" --set checkpoint.every=0 --set train.eval_batches=1 \
      --set cluster.replica_every=$k > "$d.log" 2>&1 || { tail -20 "$d.log"; exit 1; }
    t=$(python3 - "$d/run_log.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
rows = rows[3:] or rows
print("%.0f" % statistics.median(r["tokens_per_s"] for r in rows))
PY
)
    tps[$k]="${tps[$k]:-} $t"
    r=$(grep -oE "\[worker [0-9]+\] peak RSS [0-9.]+" "$d.log" | awk '{print $NF}' | sort -n | tail -1)
    rss[$k]="${rss[$k]:-} $r"
    echo "run $i, replica_every $k: $t tokens/s, peak worker RSS $r MB" >&2
  done
done
med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
line=$(grep -h "replicas: rank" "$out"/r1.1.log | head -1 | sed 's/.*replicas: //')
xfer=$(grep -h "ms per step per worker in replica transfers" "$out"/r1.*.log | grep -oE "replicas: [0-9.]+" | awk '{print $2}' | tr '\n' ' ')
echo "replicas on (replica_every 1): median $(echo "${tps[1]}" | med) tokens/s, peak worker RSS $(echo "${rss[1]}" | med) MB  [runs:${tps[1]}]"
echo "replicas off (replica_every 0): median $(echo "${tps[0]}" | med) tokens/s, peak worker RSS $(echo "${rss[0]}" | med) MB  [runs:${tps[0]}]"
echo "per worker: $line"
echo "replica transfer time per step per worker, ms (each run with replicas): $xfer"
