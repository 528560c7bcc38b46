#!/usr/bin/env bash
# Side by side in one session: `switchyard up configs/bench.yaml --workers 2` with several
# builds (or settings), alternating, ROUNDS rounds; per run the medians over steps >= 4 of
# the run log's step_ms, compute_ms, alltoall_ms, allreduce_ms, optimizer_ms, replica_ms
# and tokens_per_s, then the medians over the runs of each variant.
# Usage: bench/replica_ab.sh ROUNDS STEPS LABEL=BIN_DIR[:--set k=v ...] ...
# e.g.   bench/replica_ab.sh 5 16 before=/tmp/before/bin after=build/bin \
#          "off=build/bin:--set cluster.replica_every=0"
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,8p "$0" >&2; exit 2; }
rounds=$1 steps=$2
shift 2
py=$(command -v /usr/bin/python3 || command -v python3)
out=$(mktemp -d) || exit 1
trap 'rm -rf "${out:?}"' EXIT
for i in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*} rest=${spec#*=}
    bin=${rest%%:*} extra=()
    [[ $rest == *:* ]] && read -r -a extra <<< "${rest#*:}"
    d=$out/$label.$i
    "$bin/switchyard" up configs/bench.yaml --workers 2 --fresh --set train.steps="$steps" \
      --set checkpoint.dir="$d" --set checkpoint.every=0 --set train.eval_batches=1 "${extra[@]}" > "$d.log" 2>&1 ||
      { tail -20 "$d.log"; exit 1; }
    "$py" - "$d/run_log.jsonl" "$label" "$i" <<'PY' | tee -a "$out/rows"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_ms"' in l]
rows = [r for r in rows if r.get("step", 0) >= 4] or rows
keys = ["step_ms", "compute_ms", "alltoall_ms", "allreduce_ms", "optimizer_ms", "replica_ms", "tokens_per_s"]
print(sys.argv[2], sys.argv[3], " ".join("%s=%.1f" % (k, statistics.median(r.get(k, 0) for r in rows)) for k in keys))
PY
  done
done
echo "medians of $rounds runs each (uptime: $(uptime | sed 's/.*load/load/'))"
"$py" - "$out/rows" <<'PY'
import collections, statistics, sys
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, _, *kv = line.split()
    runs.setdefault(label, []).append(dict((k, float(v)) for k, v in (x.split("=") for x in kv)))
keys = ["step_ms", "compute_ms", "alltoall_ms", "allreduce_ms", "optimizer_ms", "replica_ms", "tokens_per_s"]
print("%-10s" % "variant" + "".join("%14s" % k for k in keys))
for label, rs in runs.items():
    print("%-10s" % label + "".join("%14.1f" % statistics.median(r[k] for r in rs) for k in keys))
PY
