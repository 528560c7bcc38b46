#!/usr/bin/env bash
# Drill: `switchyard up` picks free ports, but its coordinator binds them later (seconds on
# a loaded machine) and anything that binds port 0 meanwhile may be given one: another
# program, or up's own workers' data sockets when they started with the coordinator
# (seen: `up --workers 4` rc 2 once in a loaded suite). Here the control port is taken
# before the coordinator binds it (SWITCHYARD_FAULT=up-port@PORT makes up pick a port a
# listener holds): up must start the coordinator again on other ports and finish the run.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 6

# a listener on a free port, holding it for the drill
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
time.sleep(300)' > "$tmp/held.port" &
sy_track "$!"
wait_for "^[0-9]+$" "$tmp/held.port" 20 || { echo "FAIL: no listener"; exit 1; }
held=$(cat "$tmp/held.port")
rc=0
SWITCHYARD_FAULT=up-port@$held timeout 300 "$bin/switchyard" up "$tmp/job.yaml" --workers 2 \
  --set checkpoint.dir="$tmp/run" > "$tmp/up.log" 2>&1 || rc=$?
check "up finishes the run although its control port $held was taken (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/run/step-00000006" ]'
check "the coordinator could not bind it and said so" 'grep -q "cannot bind the control socket at tcp://127.0.0.1:$held" "$tmp/up.log"'
check "up says it moved the coordinator to other ports" 'grep -q "port $held or [0-9]* was taken before the coordinator could bind it" "$tmp/up.log"'
# a coordinator that fails for another reason (a bad config) is not started again
echo "model: {d_model: -1}" > "$tmp/bad.yaml"
rc=0
timeout 120 "$bin/switchyard" up "$tmp/bad.yaml" --workers 2 > "$tmp/bad.log" 2>&1 || rc=$?
check "a bad config still ends up with rc 2, tried once" \
  '[ $rc -eq 2 ] && ! grep -q "was taken before" "$tmp/bad.log" && [ "$(grep -c "d_model" "$tmp/bad.log")" -le 1 ]'
drill_end
