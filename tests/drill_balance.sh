#!/usr/bin/env bash
# Drill (issue 12, item 8): shares of the batch follow what workers really compute, not a
# one-off sgemm probe. A: two identical workers keep equal rows (a noisy probe must not
# change the training result). B: a worker sharing its core with two CPU hogs (taskset)
# is named as the straggler, and at a checkpoint boundary the mesh is re-planned from
# measured compute time so it gets fewer rows. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
drill_data
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 128, n_layers: 2, n_heads: 4, d_ff: 512, n_experts: 4, switch_every: 2, seq_len: 64}
train: {steps: 120, batch_size: 12, seq_len: 64, lr: 0.01, warmup_steps: 2, log_every: 10, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 20, keep: 2}
cluster: {heartbeat_ms: 200, timeout_ms: 3000, balance_by_speed: true}
YAML
# A: identical workers
sed 's/steps: 120/steps: 30/' "$tmp/job.yaml" > "$tmp/a.yaml"
coord a "$tmp/a.yaml" 2
worker a.w1; worker a.w2
wait_exit "$cpid" 120 || true
check "A: the run completes (rc $rc)" '[ "$rc" -eq 0 ]'
check "A: two identical workers start with equal rows (0..5 and 6..11)" \
  'grep -q "rows 0\.\.5," "$tmp/a.log" && grep -q "rows 6\.\.11," "$tmp/a.log" && ! grep -q "shares follow" "$tmp/a.log"'

# B: one worker on a core shared with two busy loops
if ! command -v taskset > /dev/null || [ "$(nproc)" -lt 2 ]; then
  skip "B needs taskset and 2 cores"
else
  for _ in 1 2; do taskset -c 0 /bin/sh -c 'while :; do :; done' & pids+=("$!"); done
  coord b "$tmp/job.yaml" 2
  port_b=$port
  taskset -c 0 "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port_b" --threads 1 > "$tmp/b.slow" 2>&1 & pids+=("$!")
  sleep 0.5
  taskset -c 1 "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port_b" --threads 1 > "$tmp/b.fast" 2>&1 & pids+=("$!")
  wait_for "step +10/" "$tmp/b.log" 120 || true
  "$bin/switchyard" status "tcp://127.0.0.1:$sport" --json --timeout 3000 > "$tmp/st.json" 2> "$tmp/st.err" || true
  "$bin/switchyard" status "tcp://127.0.0.1:$sport" --timeout 3000 > "$tmp/st.txt" 2>&1 || true
  wait_exit "$cpid" 300 || true
  slow=$(grep -oE "worker [^ ]+: data endpoint" "$tmp/b.slow" | awk '{print $2}' | sed 's/:$//' | head -1)
  check "B: status names the slowed worker as the straggler, with each rank's own compute and wait" '/usr/bin/python3 -c "
import json, sys
d = json.load(open(sys.argv[1])); slow = sys.argv[2]
ws = {w[\"id\"]: w for w in d[\"workers\"] if w[\"rank\"] >= 0}
assert d[\"straggler_rank\"] == ws[slow][\"rank\"], (d[\"straggler_rank\"], ws[slow][\"rank\"])
assert d[\"straggler_wait_s\"] > 0 and all(w[\"compute_s\"] > 0 and w[\"wait_s\"] > 0 for w in ws.values())
fast = [w for i, w in ws.items() if i != slow][0]
assert ws[slow][\"compute_s\"] > fast[\"compute_s\"], (ws[slow], fast)
" "$tmp/st.json" "$slow" && grep -q "straggler: rank" "$tmp/st.txt"'

  check "B: the run completes (rc $rc)" '[ "$rc" -eq 0 ]'
  check "B: the slowed worker ($slow) is named as the straggler" 'grep -E "straggler" "$tmp/b.log" | grep -q "$slow"'
  check "B: the mesh is re-planned from measured compute at a checkpoint" 'grep -q "re-balancing" "$tmp/b.log"'
  last=$(grep -E "^.*rank [0-9]+: $slow .*rows [0-9]+\.\.[0-9]+" "$tmp/b.log" | tail -1 | grep -oE "rows [0-9]+\.\.[0-9]+" || true)
  check "B: the slowed worker ends with fewer than half the rows ($last)" \
    '[ -n "$last" ] && [ $(( $(echo "$last" | sed -E "s/rows ([0-9]+)\.\.([0-9]+)/\2 - \1 + 1/") )) -lt 6 ]'
  grep -E "re-balancing|straggler" "$tmp/b.log" | head -3 || true
fi
drill_end
