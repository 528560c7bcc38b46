#!/usr/bin/env bash
# Drill: a worker of another build (one from before the data protocol version, which
# sends none) must be refused at registration with a reason that says so, not admitted
# into a run whose expert exchange it does not speak. Session 5 changed the exchange's
# chunks (stand-ins); a mixed cluster then waited out the data deadline (a minute or
# more) and failed with "no data from rank". The worker is sy-attack old-worker with an
# allowed key (an insider: the key is not the problem).
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 100000
coord c "$tmp/job.yaml" 1
wait_for "listening|waiting for" "$tmp/c.log" 30 || true
rc=0
timeout 20 "$bin/sy-attack" old-worker --coord "tcp://127.0.0.1:$port" --server-key "$tmp/keys/coordinator.key" \
  --cert "$tmp/keys/workers/worker-0.secret" > "$tmp/old.out" 2>&1 || rc=$?
check "a worker of an older build is refused (rc $rc: $(head -c 300 "$tmp/old.out"))" '[ "$rc" -eq 0 ]'
check "... the reason names the data protocol version and the fix" \
  'grep -q "data protocol version 0, this coordinator.s workers speak [0-9]*: run the same switchyard build" "$tmp/old.out"'
check "the coordinator logs the refusal" 'grep -q "data protocol version 0" "$tmp/c.log"'
drill_end
