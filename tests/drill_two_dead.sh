#!/usr/bin/env bash
# Drill (issue 12, item 1): two of three workers SIGKILLed at the same moment after a
# checkpoint exists, min_workers 1. The run must re-plan without BOTH dead workers (a
# failed send while handing out the checkpoint state means re-plan again, never give up)
# and finish on the survivor. DRILL_RUNS=N repeats it (default 3); prints runs, recovered,
# steps lost and seconds from the kill to the next step. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 200
runs=${DRILL_RUNS:-3} ok=0 figures=""
for run in $(seq 1 "$runs"); do
  n=r$run
  coord "$n" "$tmp/job.yaml" 1 --start-workers 3
  ws=()
  for i in 1 2 3; do worker "$n.w$i"; ws+=("$wpid"); done
  if ! wait_for "checkpoint .*step-00000010" "$tmp/$n.log" 60; then echo "run $run: no checkpoint 10"; continue; fi
  sleep 0.$((RANDOM % 5))
  kill -9 "${ws[0]}" "${ws[1]}"
  wait_exit "$cpid" 120 || true
  if [ "$rc" -eq 0 ] && [ -d "$tmp/$n/step-00000200" ] && grep -q "mesh of 1 worker" "$tmp/$n.log"; then
    ok=$((ok + 1))
    figures="$figures $(recovery_figures "$tmp/$n.log" "$tmp/$n/run_log.jsonl")"
  else
    echo "run $run: rc $rc"; grep -E "error|giving up|send failed|recovering" "$tmp/$n.log" | head -5
  fi
done
check "two of three workers killed together: $ok of $runs runs recovered and finished on the survivor" '[ $ok -eq $runs ]'
echo "figures (steps lost, seconds from the kill to the next step):$figures"
drill_end
