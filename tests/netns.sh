#!/usr/bin/env bash
# Several machines in one: a coordinator and three workers, each in its own network
# namespace, joined by veth pairs to a bridge that lives in a fifth namespace (nothing is
# added to the host's own network stack). Addresses are 10.A.B.0/24 with A.B drawn per
# run; namespace names carry a per-run tag. Drills:
#   1. workers find the address that reaches the coordinator themselves (no --advertise),
#      data ports pinned with --port, status read from another namespace;
#   2. tc tbf rate limits on every machine's link (this kernel has no netem): the
#      all-to-all and all-reduce times in `switchyard status --json` grow as the
#      bandwidth shrinks;
#   3. one worker's link cut for longer than cluster.timeout_ms and restored: the
#      worker is dropped, the run goes on with two, the worker rejoins at a checkpoint;
#   4. the run trains to the end (rc 0) and its final checkpoint verifies.
# CURVE is on, as in production: keys made with `switchyard keygen --cluster`, each
# machine given its own worker key, the status read with the operator key.
# Skipped (exit 77) with the reason where namespaces cannot be made (not root, no
# `ip netns`, no veth/bridge/tbf). Everything it made is deleted on exit.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (running as uid $(id -u))"
command -v ip > /dev/null || skip "no 'ip' command (Debian package iproute2)"
command -v tc > /dev/null || skip "no 'tc' command (Debian package iproute2)"

# $tmp, $tag, $net, ns, the namespaces and the trap that deletes them (tests/lib/netns.sh);
# check, sy_track, sy_summary (tests/lib/common.sh, which it sources)
. "$src/tests/lib/netns.sh"
netns_init sy
nodes=(c w1 w2 w3)
# --- the network: namespace $tag-br holds the bridge; every node has eth0 10.A.B.(i+1)
netns_make "${nodes[@]}" || skip "$netns_err"
tc -n "$(ns c)" qdisc add dev eth0 root tbf rate 1gbit burst 256kb latency 100ms 2> "$tmp/err" ||
  skip "no tbf qdisc: $(cat "$tmp/err")"
tc -n "$(ns c)" qdisc del dev eth0 root
echo "network: namespaces $tag-{br,c,w1,w2,w3}, coordinator $net.1, workers $net.2-4"

in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

"$bin/switchyard" prepare --out "$tmp/data" --val-fraction 0.2 --split file $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort) > /dev/null 2>&1
# big enough that a step's messages take visible time at a few Mbit/s, small enough to
# train fast on two shared cores
steps=${SY_NETNS_STEPS:-1500}
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 48, n_layers: 2, n_heads: 2, d_ff: 96, n_experts: 6, switch_every: 2, seq_len: 32}
train: {steps: $steps, batch_size: 12, seq_len: 32, lr: 0.01, warmup_steps: 2, log_every: 50, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/run, every: 50, keep: 3}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
wire: {local: false}  # the namespaces stand for machines; their shared /tmp must not carry the data
YAML
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 3 > "$tmp/keygen.out" 2>&1 ||
  { cat "$tmp/keygen.out"; echo "FAIL: switchyard keygen"; exit 1; }
CTRL="tcp://$net.1:5555" ST="tcp://$net.1:5556"
in_ns c "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "$CTRL" --status "$ST" \
  --start-workers 3 --min-workers 2 --keys "$tmp/keys" > "$tmp/coord.log" 2>&1 &
cpid=$!
sy_track "$cpid"
for k in 1 2 3; do
  in_ns "w$k" "$bin/switchyard-worker" --coordinator "$CTRL" --port 7000 --threads 1 \
    --cert "$tmp/keys/workers/worker-$((k - 1)).secret" --coordinator-key "$tmp/keys/coordinator.key" > "$tmp/w$k.log" 2>&1 &
  sy_track "$!"
done
status() { in_ns "$1" "$bin/switchyard" status "$ST" --keys "$tmp/keys" --json --timeout 3000; }
field() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
in_mesh() { status c 2> /dev/null | field 'sum(1 for w in d["workers"] if w["state"]=="training")' 2> /dev/null; }

# 1: a mesh of three machines
check "the first mesh has 3 workers" 'wait_for "mesh of 3 workers" "$tmp/coord.log" 60'
for _ in $(seq 1 100); do [ "$(in_mesh)" = 3 ] && break; sleep 0.2; done
status w2 > "$tmp/s0.json" 2> "$tmp/s0.err" || true
check "status answers a client in another namespace" '[ -s "$tmp/s0.json" ]'
eps=$(field '" ".join(sorted(w["endpoint"] for w in d["workers"]))' < "$tmp/s0.json" 2> /dev/null || true)
check "workers advertise their own addresses with the pinned port ($eps)" \
  '[ "$eps" = "tcp://$net.2:7000 tcp://$net.3:7000 tcp://$net.4:7000" ]'

# 2: bandwidth. Each phase: set tbf on every machine's eth0 (egress), let a few steps
# pass, then take the median of several status samples.
shape() { # shape RATE|none
  local n
  for n in "${nodes[@]}"; do netns_rate "$n" "$1" 32kb 500ms; done
}
sample() { # sample SECONDS AFTER: median all-to-all and all-reduce ms over the steps after step AFTER
  local end=$((SECONDS + $1))
  : > "$tmp/samples"
  while [ $SECONDS -lt $end ]; do
    status c 2> /dev/null | field '"%d %.3f %.3f" % (d["step"], d["alltoall_s"] * 1e3, d["allreduce_s"] * 1e3)' \
      >> "$tmp/samples" 2> /dev/null || true
    sleep 0.3
  done
  # one sample per step (the status shows the last step), median of each column
  sort -u "$tmp/samples" | /usr/bin/python3 -c '
import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip() and int(l.split()[0]) > int(sys.argv[1])]
print(" ".join("%.2f" % statistics.median([float(r[k]) for r in rows]) if rows else "nan" for k in (1, 2)), len(rows))' "$2"
}
declare -A a2a ar
rates=(none 10mbit 2mbit)
for rate in "${rates[@]}"; do
  # the step in flight when the rate changed ran partly at the old rate: only later ones count
  step0=$(status c 2> /dev/null | field 'd["step"]' 2> /dev/null || echo 0)
  shape "$rate"
  sleep 1
  read -r a2a[$rate] ar[$rate] nsamp < <(sample 8 $((${step0:-0} + 1))) || true
  echo "bandwidth $rate: all-to-all ${a2a[$rate]} ms, all-reduce ${ar[$rate]} ms (median of $nsamp steps)"
done
shape none
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
check "all-to-all time grows as bandwidth shrinks (${a2a[none]} < ${a2a[10mbit]} < ${a2a[2mbit]} ms)" \
  'gt "${a2a[10mbit]}" "${a2a[none]}" && gt "${a2a[2mbit]}" "${a2a[10mbit]}"'
check "all-reduce time grows as bandwidth shrinks (${ar[none]} < ${ar[10mbit]} < ${ar[2mbit]} ms)" \
  'gt "${ar[10mbit]}" "${ar[none]}" && gt "${ar[2mbit]}" "${ar[10mbit]}"'

# 3: cut w3's link for longer than the timeout, then restore it
cut_s=${SY_NETNS_CUT:-4}
t0=$(date +%s.%N)
ip -n "$(ns br)" link set p-w3 down
check "the cut-off worker is declared dead" 'wait_for "died" "$tmp/coord.log" 15'
t_drop=$(date +%s.%N)
check "the run goes on with 2 workers" 'wait_for "mesh of 2 workers" "$tmp/coord.log" 20'
s_before=$(status c 2> /dev/null | field 'd["step"]' || echo 0)
sleep 2
s_after=$(status c 2> /dev/null | field 'd["step"]' || echo 0)
check "steps advance while the link is down ($s_before -> $s_after)" '[ "$s_after" -gt "$s_before" ]'
left=$(awk -v t0="$t0" -v c="$cut_s" -v now="$(date +%s.%N)" 'BEGIN { l = t0 + c - now; print (l > 0 ? l : 0) }')
sleep "$left"
ip -n "$(ns br)" link set p-w3 up
t_up=$(date +%s.%N)
back3() { awk '/mesh of 2 workers/ { f = 1 } f && /mesh of 3 workers/ { hit = 1 } END { exit !hit }' "$tmp/coord.log"; }
rejoined=0
for _ in $(seq 1 600); do back3 && { rejoined=1; break; }; sleep 0.1; done
t_rejoin=$(date +%s.%N)
check "the worker rejoins: a mesh of 3 workers after the cut" '[ $rejoined = 1 ]'
awk -v a="$t0" -v b="$t_drop" -v u="$t_up" -v r="$t_rejoin" -v c="$cut_s" 'BEGIN {
  printf "link cut %.0f s: dropped %.1f s after the cut; back in the mesh %.1f s after the link came up\n", c, b - a, r - u }'

# 4: to the end
for _ in $(seq 1 1800); do kill -0 "$cpid" 2> /dev/null || break; sleep 0.1; done
kill -0 "$cpid" 2> /dev/null && { echo "coordinator still running after 180 s: killed"; kill -9 "$cpid"; }
rc=0
wait "$cpid" || rc=$?
last=$(printf '%s/run/step-%08d' "$tmp" "$steps")
check "the run trains to the end (rc $rc)" '[ $rc -eq 0 ] && [ -d "$last" ]'
check "its final checkpoint verifies" '"$bin/switchyard" ckpt verify "$last" > "$tmp/verify.out" 2>&1'

[ $fail -eq 0 ] || for f in "$tmp"/*.log; do echo "--- $f"; grep -vE "step +[0-9]+/" "$f" | tail -12; done
sy_summary
