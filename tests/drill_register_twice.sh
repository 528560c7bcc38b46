#!/usr/bin/env bash
# Drill: a worker registers again while its Assignment waits in its queue (it registers
# every second until assigned, and on a loaded machine the Assignment can take longer than
# that to be read). The second Register crossed the Assignment; the coordinator took it for
# a worker that had dropped its assignment and re-planned the mesh ("recovering ...
# registered again"), a needless recovery at start-up. SWITCHYARD_FAULT=register-twice
# makes the crossing certain: the worker reads nothing for 1.2 s after its first Register.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
# timeout_ms 3000: the crossing Register comes about 1.2 s after the Assignment went out
drill_job "$tmp/job.yaml" 30 "cluster: {heartbeat_ms: 200, timeout_ms: 3000, balance_by_speed: false}"
sed -i '/^cluster: {heartbeat_ms: 200, timeout_ms: 1500/d' "$tmp/job.yaml"

coord run "$tmp/job.yaml" 2 --start-workers 2
worker w1
wait_for "joined from.*; 1 of 2" "$tmp/run.log" 60 || true
SWITCHYARD_FAULT=register-twice worker w2
wait_exit "$cpid" 120 || true
check "the run completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/run/step-00000030" ]'
check "the worker registered twice before reading its assignment" 'grep -q "fault drill: registering again" "$tmp/w2"'
check "the coordinator kept the assignment" 'grep -q "registered again before its assignment reached it: the assignment stands" "$tmp/run.log"'
check "the coordinator never had to recover (one epoch)" \
  '! grep -q "recovering" "$tmp/run.log" && [ "$(grep -c "workers ready for epoch" "$tmp/run.log")" -eq 1 ]'
drill_end
