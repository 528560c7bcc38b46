#!/usr/bin/env bash
# Drill (issue 12, item 4): a worker on the coordinator's machine reaches it through
# 127.0.0.1 and so advertises tcp://127.0.0.1:PORT, while another worker sits on another
# "machine" (a network namespace joined by a veth pair). Peers elsewhere can never reach
# a loopback address: the coordinator must refuse that worker with a clear reason and go
# on with the reachable one, instead of sitting at step 0. Needs root (ip netns); skipped,
# saying so, where that is not permitted. Names are unique per run; the namespace and the
# veth pair are removed by the drill. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
id=$$$RANDOM; id=${id: -6}
ns=sylo$id va=syla$id vb=sylb$id
net=10.$((200 + RANDOM % 50)).$((RANDOM % 250))
if ! ip netns add "$ns" 2> "$tmp/netns.err"; then
  skip "cannot create a network namespace here ($(cat "$tmp/netns.err")): the loopback drill needs root and ip netns"
  exit 77
fi
sy_at_exit 'ip netns del "$ns" 2>/dev/null; ip link del "$va" 2>/dev/null'
ip link add "$va" type veth peer name "$vb"
ip link set "$vb" netns "$ns"
ip addr add "$net.1/24" dev "$va"; ip link set "$va" up
ip netns exec "$ns" ip addr add "$net.2/24" dev "$vb"
ip netns exec "$ns" ip link set "$vb" up
ip netns exec "$ns" ip link set lo up
sy_prepare
drill_job "$tmp/job.yaml" 30
port=$(free_port) sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://0.0.0.0:$port" --status "tcp://127.0.0.1:$sport" \
  --min-workers 1 --start-workers 2 "${ckeys[@]}" --set checkpoint.dir="$tmp/run" > "$tmp/coord.log" 2>&1 &
cpid=$!; sy_track "$cpid"
wkeys
"$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 "${wk[@]}" > "$tmp/local.log" 2>&1 &
wlocal=$!; sy_track "$wlocal"
wkeys
ip netns exec "$ns" "$bin/switchyard-worker" --coordinator "tcp://$net.1:$port" --threads 1 "${wk[@]}" > "$tmp/remote.log" 2>&1 &
sy_track "$!"
wait_exit "$cpid" 60 || true
check "the run does not sit at step 0: it completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/run/step-00000030" ]'
check "the loopback-advertising worker is refused, naming its address and the remote peer" \
  'grep -E "refus|out of the run" "$tmp/coord.log" | grep -q "127.0.0.1" && grep -q "$net.2" "$tmp/coord.log"'
check "the refusal tells how to fix it (--advertise)" 'grep -q -- "--advertise" "$tmp/coord.log"'
check "the worker itself warns that its endpoint is loopback" 'grep -qi "loopback" "$tmp/local.log"'
wait_exit "$wlocal" 10 || true
check "the refused worker exits non-zero (rc $rc)" '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]'
drill_end
