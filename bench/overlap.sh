#!/usr/bin/env bash
# Exposed communication per step with and without the overlapped gradient all-reduce
# (wire.overlap) on 2 workers running the configs/bench.yaml model, on loopback or (as
# root, NETNS=1) with each process in its own network namespace behind a tc tbf rate
# limit on the workers' links (the set-up of tests/netns.sh).
#
# The machine is shared and its speed moves by 2x between runs, so each run compares
# both ways step by step: SWITCHYARD_OVERLAP_AB=1 makes the workers overlap on even steps
# and reduce serially on odd ones (same bits either way). Prints, for every run and as
# the median over runs, the per-step medians (steps 3..) of each half:
#   exposed = step - compute (a step's time not spent computing: all-to-all, all-reduce,
#   optimizer, waiting for the slower peer)
# With AB=replica the halves are instead the replica gradients on the overlap thread
# during the backward (even steps) against the blocking send after the all-reduce (odd
# steps; SWITCHYARD_REPLICA_AB=1), the all-reduce overlapped in both.
# usage: bench/overlap.sh [BIN_DIR]
#   env: NETNS=1 (namespaces + tbf, root), RATE (1gbit), ROUNDS (3), STEPS (30), KEEP=1,
#        AB=replica
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${1:-build/bin}" && pwd)
rate=${RATE:-1gbit} rounds=${ROUNDS:-3} steps=${STEPS:-30} netns=${NETNS:-}
[ -z "$netns" ] || [ "$(id -u)" -eq 0 ] || { echo "bench/overlap.sh: NETNS=1 needs root" >&2; exit 2; }
[ -f data/train.bin ] || "$bin/switchyard" prepare > /dev/null
tmp=$(mktemp -d) || exit 1
tag=$(printf 'ov%06x' $((($$ ^ RANDOM) & 0xffffff)))
net="10.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))"
made=() pids=()
cleanup() {
  local p n
  for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  for n in "${made[@]}"; do ip netns del "$n" 2> /dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept ${tmp:?}"; else rm -rf "${tmp:?}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ns() { echo "$tag-$1"; }
if [ -n "$netns" ]; then
  ip netns add "$(ns br)"
  made+=("$(ns br)")
  ip -n "$(ns br)" link add br0 type bridge
  ip -n "$(ns br)" link set br0 up
  i=0
  for n in c w1 w2; do
    i=$((i + 1))
    ip netns add "$(ns $n)"
    made+=("$(ns $n)")
    ip -n "$(ns br)" link add "p-$n" type veth peer name eth0 netns "$(ns $n)"
    ip -n "$(ns br)" link set "p-$n" master br0 up
    ip -n "$(ns $n)" link set lo up
    ip -n "$(ns $n)" addr add "$net.$i/24" dev eth0
    ip -n "$(ns $n)" link set eth0 up
    [ "$n" = c ] || tc -n "$(ns $n)" qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 200ms
  done
fi
what=overlap
if [ "${AB:-}" = replica ]; then
  export SWITCHYARD_REPLICA_AB=1
  what=replica-offpath
else
  export SWITCHYARD_OVERLAP_AB=1
fi
run() { # NAME
  local sets=(--set "train.steps=$steps" --set "checkpoint.dir=$tmp/$1" --set "data.dir=$PWD/data"
    --set "wire.overlap=true")
  if [ -z "$netns" ]; then
    "$bin/switchyard" up configs/bench.yaml --workers 2 --fresh "${sets[@]}" > "$tmp/$1.log" 2>&1 ||
      { echo "run $1 failed:"; tail -5 "$tmp/$1.log"; exit 1; }
    return
  fi
  local cp ctrl="tcp://$net.1:5555"
  # CURVE keys, as in production
  [ -d "$tmp/keys" ] || "$bin/switchyard" keygen --cluster "$tmp/keys" --workers 2 > /dev/null
  ip netns exec "$(ns c)" "$bin/switchyard-coordinator" configs/bench.yaml --bind "$ctrl" --status "tcp://$net.1:5556" \
    --min-workers 2 --start-workers 2 --fresh --keys "$tmp/keys" "${sets[@]}" > "$tmp/$1.log" 2>&1 &
  cp=$!
  pids+=("$cp")
  for k in 1 2; do
    ip netns exec "$(ns w$k)" "$bin/switchyard-worker" --coordinator "$ctrl" --threads 1 \
      --cert "$tmp/keys/workers/worker-$((k - 1)).secret" --coordinator-key "$tmp/keys/coordinator.key" > "$tmp/$1.w$k.log" 2>&1 &
    pids+=("$!")
  done
  wait "$cp" || { echo "run $1 failed:"; tail -5 "$tmp/$1.log"; exit 1; }
  sleep 1
}
for r in $(seq 1 "$rounds"); do run "run$r"; done
/usr/bin/python3 - "$tmp" "$rounds" "${netns:+tbf $rate}" "$what" <<'PY'
import json, statistics as st, sys
tmp, rounds, net, what = sys.argv[1], int(sys.argv[2]), sys.argv[3] or "loopback", sys.argv[4]
keys = ("step_ms", "compute_ms", "alltoall_ms", "allreduce_ms", "exposed_ms")
agg = {"off": [], "on": []}
def line(m):
    return (f"step {m['step_ms']:.0f} ms, compute {m['compute_ms']:.0f}, all-to-all {m['alltoall_ms']:.0f}, "
            f"all-reduce {m['allreduce_ms']:.0f}, exposed {m['exposed_ms']:.0f} "
            f"({100 * m['exposed_ms'] / m['step_ms']:.1f}% of the step; all-reduce "
            f"{100 * m['allreduce_ms'] / m['step_ms']:.1f}%)")
for r in range(1, rounds + 1):
    rows = [json.loads(l) for l in open(f"{tmp}/run{r}/run_log.jsonl") if l.strip()]
    rows = [x for x in rows if "step_ms" in x and x["step"] >= 3]
    for x in rows:
        x["exposed_ms"] = x["step_ms"] - x["compute_ms"]
    for mode in ("on", "off"):  # run-log step s is 0-based step s-1: even = overlapped
        half = [x for x in rows if ((x["step"] - 1) % 2 == 0) == (mode == "on")]
        med = {k: st.median(x[k] for x in half) for k in keys}
        agg[mode].append(med)
        print(f"{net}, run {r}, {what} {mode:3} ({len(half)} steps): {line(med)}")
for mode in ("off", "on"):
    m = {k: st.median(x[k] for x in agg[mode]) for k in keys}
    print(f"{net}, median of {rounds} runs, {what} {mode:3}: {line(m)}")
PY
