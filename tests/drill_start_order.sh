#!/usr/bin/env bash
# Drill: workers started before their coordinator (a service manager that brings up the
# workers first, or a coordinator slow to start on a loaded machine). A worker's clock of
# the coordinator's silence must not run from its own start: the Assignment arrives before
# the first heartbeat, and a worker that counted the seconds before the coordinator existed
# stopped step 0 on its own ("no word from the coordinator") while the coordinator, which
# heard the workers' heartbeats all along, waited for the step's reports forever.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
# heartbeats once a second: the Assignment (sent as soon as both workers registered)
# comes well before the first heartbeat, as on a loaded machine
drill_job "$tmp/job.yaml" 30 "cluster: {heartbeat_ms: 1000, timeout_ms: 3000, balance_by_speed: false}"
sed -i '/^cluster: {heartbeat_ms: 200, timeout_ms: 1500/d' "$tmp/job.yaml"

port=$(free_port)
sport=$(free_port)
worker w1; worker w2
sleep 3.5 # past the run's timeout (3 s), within the workers' own before they know it (5 s)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --min-workers 2 "${ckeys[@]}" --set checkpoint.dir="$tmp/run" >> "$tmp/coord.log" 2>&1 &
cpid=$!; sy_track "$cpid"
wait_exit "$cpid" 60 || true
check "the run completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/run/step-00000030" ]'
check "no worker stopped a step for the coordinator's silence" '! grep -h "no word from the coordinator" "$tmp/w1" "$tmp/w2"'
check "the coordinator never had to recover" '! grep -q "recovering" "$tmp/coord.log"'
drill_end
