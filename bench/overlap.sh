#!/usr/bin/env bash
# Exposed communication per step with and without wire.overlap (the overlapped gradient
# all-reduce and the pipelined expert exchange) on 2 workers running the configs/bench.yaml
# model, on loopback or (as root, NETNS=1) with each process in its own network namespace behind a tc tbf rate
# limit on the workers' links (tests/lib/netns.sh, as tests/netns.sh).
#
# The machine is shared and its speed moves by 2x between runs, so each run compares
# both ways step by step: SWITCHYARD_OVERLAP_AB=1 makes the workers overlap on even steps
# and run serially on odd ones (same bits either way). Prints, for every run and as the
# median over runs, the per-step medians (steps 3..) of each half:
#   exposed = step - compute (a step's time not spent in forward and backward)
#   comm = step - compute - optimizer (the part of it spent communicating or waiting:
#   all-to-all, all-reduce, replica transfers (replica_ms: the blocking ones), the
#   coordinator's round trip, waiting for the slower peer; optimizer_ms holds the AdamW
#   of this rank and of the buddy replicas it keeps); split into
#     critical = step - busiest (busiest_ms: the largest compute + optimizer of one
#       rank): time no rank's own work explains, communication on the critical path
#     imbalance = busiest - compute - optimizer: the others waiting for the busiest rank
#       (the experts' rows per rank differ from step to step)
# With AB=replica the halves are instead the replica gradients on the overlap thread
# during the backward (even steps) against the blocking send after the all-reduce (odd
# steps; SWITCHYARD_REPLICA_AB=1), the all-reduce overlapped in both.
# With AB=fill the halves are the backward that fills the expert exchange's waits with
# put-off weight gradients (wire.fill_waits; even steps) against the one that computes
# them in place (odd steps; SWITCHYARD_FILL_AB=1), everything else overlapped in both.
# Each worker also writes its timeline (switchyard-worker --trace; TRACE=0: not), and
# bench/trace_split.py walks every step's critical path back through it: *exposed
# communication* = the time on that path spent with bytes on their way (a message from
# the moment its sender began handing it to ZeroMQ until the receiver had it, the
# all-reduce's tail after the last backward, the coordinator's round trip) rather than in
# some rank's compute; the rest of "communication" above is one rank waiting for another.
# usage: bench/overlap.sh [BIN_DIR]
#   env: NETNS=1 (namespaces + tbf, root), RATE (1gbit), ROUNDS (3), STEPS (30), KEEP=1,
#   AB=replica|fill, INSECURE=1 (no CURVE: on one machine its encryption takes CPU from the
#   compute), TRACE=0, REPLICAS=0 (cluster.replica_every=0: no buddy replicas), LOCAL=0 (loopback
#   TCP between the workers instead of their local ipc sockets; always so with NETNS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${1:-build/bin}" && pwd)
rate=${RATE:-1gbit} rounds=${ROUNDS:-3} steps=${STEPS:-30} netns=${NETNS:-}
[ -z "$netns" ] || [ "$(id -u)" -eq 0 ] || { echo "bench/overlap.sh: NETNS=1 needs root" >&2; exit 2; }
[ -f data/train.bin ] || "$bin/switchyard" prepare > /dev/null
# $tmp, $tag, $net, ns, the namespaces, and the trap that deletes them
. tests/lib/netns.sh
netns_init ov
if [ -n "$netns" ]; then
  netns_make c w1 w2 || { echo "bench/overlap.sh: $netns_err" >&2; exit 2; }
  for n in w1 w2; do netns_rate "$n" "$rate" 256kb 200ms; done
fi
what=overlap
if [ "${AB:-}" = replica ]; then
  export SWITCHYARD_REPLICA_AB=1
  what=replica-offpath
elif [ "${AB:-}" = fill ]; then
  export SWITCHYARD_FILL_AB=1
  what=fill-waits
else
  export SWITCHYARD_OVERLAP_AB=1
fi
# the critical path of every step of run NAME, even and odd steps apart
split() {
  [ "${TRACE:-1}" != 0 ] || return 0
  sleep 1 # the workers close their timelines as they exit
  /usr/bin/python3 bench/trace_split.py "$tmp/$1.trace" --ab --json > "$tmp/$1.split.json" ||
    { echo "bench/overlap.sh: bench/trace_split.py failed on run $1" >&2; exit 1; }
}
run() { # NAME
  local trace=()
  [ "${TRACE:-1}" = 0 ] || trace=(--trace "$tmp/$1.trace")
  local sets=(--set "train.steps=$steps" --set "checkpoint.dir=$tmp/$1" --set "data.dir=$PWD/data"
    --set "wire.overlap=true" --set "cluster.replica_every=${REPLICAS:-1}")
  # namespaces stand for machines (their shared /tmp must not carry the data); LOCAL=0
  # makes workers on one machine use loopback TCP instead of their local sockets
  if [ -n "$netns" ] || [ "${LOCAL:-1}" = 0 ]; then sets+=(--set "wire.local=false"); fi
  [ "${AB:-}" != fill ] || sets+=(--set "wire.fill_waits=true") # on even steps (SWITCHYARD_FILL_AB)
  if [ -z "$netns" ]; then
    "$bin/switchyard" up configs/bench.yaml --workers 2 --fresh ${INSECURE:+--insecure} "${trace[@]}" "${sets[@]}" \
      > "$tmp/$1.log" 2>&1 || { echo "run $1 failed:"; tail -5 "$tmp/$1.log"; exit 1; }
    split "$1"
    return
  fi
  local cp ctrl="tcp://$net.1:5555"
  # CURVE keys, as in production (unless INSECURE)
  [ -d "$tmp/keys" ] || "$bin/switchyard" keygen --cluster "$tmp/keys" --workers 2 > /dev/null
  local csec=(--keys "$tmp/keys")
  [ -z "${INSECURE:-}" ] || csec=(--insecure)
  ip netns exec "$(ns c)" "$bin/switchyard-coordinator" configs/bench.yaml --bind "$ctrl" --status "tcp://$net.1:5556" \
    --min-workers 2 --start-workers 2 --fresh "${csec[@]}" "${sets[@]}" > "$tmp/$1.log" 2>&1 &
  cp=$!
  sy_track "$cp"
  for k in 1 2; do
    local wsec=(--cert "$tmp/keys/workers/worker-$((k - 1)).secret" --coordinator-key "$tmp/keys/coordinator.key")
    [ -z "${INSECURE:-}" ] || wsec=(--insecure)
    ip netns exec "$(ns w$k)" "$bin/switchyard-worker" --coordinator "$ctrl" --threads 1 "${wsec[@]}" "${trace[@]}" \
      > "$tmp/$1.w$k.log" 2>&1 &
    sy_track "$!"
  done
  wait "$cp" || { echo "run $1 failed:"; tail -5 "$tmp/$1.log"; exit 1; }
  sleep 1
  split "$1"
}
for r in $(seq 1 "$rounds"); do run "run$r"; done
where="one machine, local sockets"
[ "${LOCAL:-1}" != 0 ] || where="loopback TCP"
[ -z "$netns" ] || where="namespaces, tbf $rate"
/usr/bin/python3 - "$tmp" "$rounds" "$where" "$what" <<'PY'
import json, os, statistics as st, sys
tmp, rounds, net, what = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keys = ("step_ms", "compute_ms", "alltoall_ms", "allreduce_ms", "optimizer_ms", "replica_ms", "exposed_ms", "comm_ms",
        "critical_ms", "imbalance_ms")
agg = {"off": [], "on": []}
def line(m):
    pct = lambda k: f"{100 * m[k] / m['step_ms']:.1f}%"
    return (f"step {m['step_ms']:.0f} ms, compute {m['compute_ms']:.0f}, all-to-all {m['alltoall_ms']:.0f} "
            f"({pct('alltoall_ms')}), all-reduce {m['allreduce_ms']:.0f} ({pct('allreduce_ms')}), optimizer "
            f"{m['optimizer_ms']:.0f}, replica {m['replica_ms']:.0f}; exposed {m['exposed_ms']:.0f} "
            f"({pct('exposed_ms')}), communication {m['comm_ms']:.0f} ({pct('comm_ms')}) = on the critical path "
            f"{m['critical_ms']:.0f} ({pct('critical_ms')}) + waiting for the busiest rank {m['imbalance_ms']:.0f} "
            f"({pct('imbalance_ms')})" +
            (f"; trace: exposed communication (critical path) {m['path_comm_ms']:.1f} ms ({m['path_comm_pct']:.1f}%), "
             f"a rank waiting for another {m['rank_wait_ms']:.1f} ms ({m['rank_wait_pct']:.1f}%)"
             if "path_comm_ms" in m else ""))
for r in range(1, rounds + 1):
    rows = [json.loads(l) for l in open(f"{tmp}/run{r}/run_log.jsonl") if l.strip()]
    rows = [x for x in rows if "step_ms" in x and x["step"] >= 3]
    for x in rows:
        x.setdefault("optimizer_ms", 0.0)
        x.setdefault("replica_ms", 0.0)
        x["exposed_ms"] = x["step_ms"] - x["compute_ms"]
        x["comm_ms"] = x["exposed_ms"] - x["optimizer_ms"]
        # busiest_ms: the largest compute + optimizer of one rank (absent before it was logged)
        busiest = x.get("busiest_ms", x["compute_ms"] + x["optimizer_ms"])
        x["critical_ms"] = x["step_ms"] - busiest
        x["imbalance_ms"] = busiest - x["compute_ms"] - x["optimizer_ms"]
    split = f"{tmp}/run{r}.split.json"
    split = json.load(open(split)) if os.path.exists(split) else None
    for mode in ("on", "off"):  # run-log step s is 0-based step s-1: even = overlapped
        half = [x for x in rows if ((x["step"] - 1) % 2 == 0) == (mode == "on")]
        med = {k: st.median(x[k] for x in half) for k in keys}
        h = split and split["even steps" if mode == "on" else "odd steps"]
        if h:
            med["path_comm_ms"], med["path_comm_pct"] = h["exposed_ms"], h["exposed_pct"]
            med["rank_wait_ms"], med["rank_wait_pct"] = h["rank_waiting_for_others_ms"], h["rank_waiting_for_others_pct"]
        agg[mode].append(med)
        print(f"{net}, run {r}, {what} {mode:3} ({len(half)} steps): {line(med)}")
for mode in ("off", "on"):
    m = {k: st.median(x[k] for x in agg[mode]) for k in keys}
    if all("path_comm_ms" in x for x in agg[mode]):
        for k in ("path_comm_ms", "path_comm_pct", "rank_wait_ms", "rank_wait_pct"):
            m[k] = st.median(x[k] for x in agg[mode])
    print(f"{net}, median of {rounds} runs, {what} {mode:3}: {line(m)}")
PY
