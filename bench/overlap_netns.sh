#!/usr/bin/env bash
# Exposed communication per step with and without the overlapped gradient all-reduce
# (wire.overlap) on 2 workers, each in its own network namespace behind a tc tbf rate
# limit (as root; see tests/netns.sh for the same set-up as a test). Runs the
# configs/bench.yaml model ROUNDS times each way, alternating, and prints the per-step
# medians (steps 3..) of every run and the median over runs:
#   exposed = step - compute (a step's time not spent computing: all-to-all, all-reduce,
#   optimizer, waiting for the slower peer)
# usage: bench/overlap_netns.sh [BIN_DIR]   env: RATE (1gbit), ROUNDS (3), STEPS (12)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin}
bin=$(cd "$bin" && pwd)
rate=${RATE:-1gbit} rounds=${ROUNDS:-3} steps=${STEPS:-12}
[ "$(id -u)" -eq 0 ] || { echo "bench/overlap_netns.sh: network namespaces need root" >&2; exit 2; }
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
  rm -rf "${tmp:?}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ns() { echo "$tag-$1"; }
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
run() { # NAME OVERLAP
  local cp ctrl="tcp://$net.1:5555"
  ip netns exec "$(ns c)" "$bin/switchyard-coordinator" configs/bench.yaml --bind "$ctrl" --status "tcp://$net.1:5556" \
    --min-workers 2 --start-workers 2 --fresh --set "train.steps=$steps" --set "checkpoint.dir=$tmp/$1" \
    --set "data.dir=$PWD/data" --set "wire.overlap=$2" > "$tmp/$1.log" 2>&1 &
  cp=$!
  pids+=("$cp")
  for k in 1 2; do
    ip netns exec "$(ns w$k)" "$bin/switchyard-worker" --coordinator "$ctrl" --threads 1 > "$tmp/$1.w$k.log" 2>&1 &
    pids+=("$!")
  done
  wait "$cp" || { echo "run $1 failed:"; tail -5 "$tmp/$1.log"; exit 1; }
  sleep 1
}
for r in $(seq 1 "$rounds"); do
  run "off$r" false
  run "on$r" true
done
/usr/bin/python3 - "$tmp" "$rounds" "$rate" <<'PY'
import json, statistics as st, sys
tmp, rounds, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
keys = ("step_ms", "compute_ms", "alltoall_ms", "allreduce_ms")
agg = {"off": [], "on": []}
for r in range(1, rounds + 1):
    for mode in ("off", "on"):
        rows = [json.loads(l) for l in open(f"{tmp}/{mode}{r}/run_log.jsonl") if l.strip()]
        rows = [x for x in rows if "step_ms" in x and x["step"] >= 3]
        med = {k: st.median(x[k] for x in rows) for k in keys}
        med["exposed_ms"] = st.median(x["step_ms"] - x["compute_ms"] for x in rows)
        med["loss"] = rows[-1]["loss"]
        agg[mode].append(med)
        print(f"round {r} overlap {mode:3}: step {med['step_ms']:.0f} ms, compute {med['compute_ms']:.0f}, "
              f"all-to-all {med['alltoall_ms']:.0f}, all-reduce {med['allreduce_ms']:.0f}, exposed "
              f"{med['exposed_ms']:.0f} ({100 * med['exposed_ms'] / med['step_ms']:.1f}%), last loss {med['loss']}")
for mode in ("off", "on"):
    m = {k: st.median(x[k] for x in agg[mode]) for k in keys + ("exposed_ms",)}
    print(f"median of {rounds} rounds, tbf {rate}, overlap {mode:3}: step {m['step_ms']:.0f} ms, compute "
          f"{m['compute_ms']:.0f}, all-to-all {m['alltoall_ms']:.0f}, all-reduce {m['allreduce_ms']:.0f}, exposed "
          f"{m['exposed_ms']:.0f} ({100 * m['exposed_ms'] / m['step_ms']:.1f}% of the step)")
PY
