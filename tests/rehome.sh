#!/usr/bin/env bash
# Re-homing from buddy replicas (issue 14): a worker SIGKILLed inside an all-to-all,
# inside the gradient all-reduce, on the overlap thread just before its replica gradients
# go to its buddy, and while sending its checkpoint shards. Each time the
# survivors keep their state, the dead rank's experts and rows go to its buddy, the step
# in flight is redone and no checkpoint is read; the final weights must equal, bit for
# bit (ckpt diff --tol 0), a run that shrank to the same mesh by plan at the same step
# (--leave STEP:RANK). A run that went back to a checkpoint instead would differ (the
# smaller mesh from a rollback routes other groups), so equality tells re-homing from
# rollback. Also: both copies lost (replicas off, or two ranks that keep each other's
# experts) falls back to the checkpoint and says which state forced it.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
tmp=$(mktemp -d) || exit 1
# CURVE keys, as in production (the workers share one key: an allow-list may hold any number)
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 1 > /dev/null
SYK=(--keys "$tmp/keys")
SYW=(--cert "$tmp/keys/workers/worker-0.secret" --coordinator-key "$tmp/keys/coordinator.key")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && { echo "kept $tmp"; return; }
  rm -rf "${tmp:?}"
}
trap cleanup EXIT
fail=0 pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$bin/switchyard" prepare --out "$tmp/data" --val-fraction 0.2 --split file $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort) > "$tmp/prep.out" 2>&1 ||
  { cat "$tmp/prep.out"; echo "FAIL: prepare"; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: 40, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 10, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 10, keep: 10}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false, replica_every: 1}
YAML

# run NAME FAULT [coordinator args...]: a coordinator and 3 workers (the third with
# SWITCHYARD_FAULT=FAULT, "" for none); waits for the coordinator (bounded), sets $rc
run() {
  local name=$1 fault=$2; shift 2
  local port sport cpid
  port=$(free_port); sport=$(free_port)
  "$bin/switchyard-coordinator" "$tmp/job.yaml" "${SYK[@]}" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
    --start-workers 3 --min-workers 2 --set checkpoint.dir="$tmp/$name" "$@" > "$tmp/$name.log" 2>&1 &
  cpid=$!; pids+=("$cpid")
  for i in 1 2; do
    "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" "${SYW[@]}" --threads 1 > "$tmp/$name.w$i" 2>&1 &
    pids+=("$!")
  done
  SWITCHYARD_FAULT=$fault "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" "${SYW[@]}" --threads 1 > "$tmp/$name.w3" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 600); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$cpid" 2>/dev/null; then echo "$name: coordinator still running after 60 s: killed"; kill -9 "$cpid"; fi
  rc=0; wait "$cpid" 2>/dev/null || rc=$?
  sleep 0.3
}
# field NAME EVENT KEY: KEY of the first EVENT line of NAME's membership log
field() { grep "\"event\": \"$2\"" "$tmp/$1/membership.jsonl" | head -1 | grep -oE "\"$3\": [-0-9.a-z]+" | awk '{print $2}'; }

for drill in "alltoall 23:alltoall" "allreduce 26:allreduce" "replica 24:replica" "save 19:save"; do
  set -- $drill
  name=$1 fault="kill@$2"
  run "k$name" "$fault"
  check "$name: the run with a killed worker completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/k$name/step-00000040" ]'
  check "$name: re-homed from the replicas, no checkpoint read" \
    'grep -q "re-homing (rank" "$tmp/k$name.log" && ! grep -q "resuming from" "$tmp/k$name.log" && ! grep -q "\"event\": \"rollback\"" "$tmp/k$name/membership.jsonl"'
  check "$name: no step lost beyond the step in flight" '[ "$(field k$name recovered steps_lost)" = 0 ]'
  step=$(field "k$name" rehome step) rank=$(field "k$name" rehome rank)
  echo "$name: worker killed in step $step (rank $rank); recovered in $(field k$name recovered recovery_s) s after its last heartbeat ($(field k$name recovered detect_s) s to notice)"
  run "p$name" "" --leave "$step:$rank" --join-at 0
  check "$name: the planned shrink at step $step completes (rc $rc)" \
    '[ $rc -eq 0 ] && [ -d "$tmp/p$name/step-00000040" ] && grep -q "leaves before step $step (planned)" "$tmp/p$name.log"'
  check "$name: killed-and-re-homed equals the planned shrink bit for bit" \
    '"$bin/switchyard" ckpt diff "$tmp/k$name/step-00000040" "$tmp/p$name/step-00000040" --tol 0 > "$tmp/$name.diff" || { tail -3 "$tmp/$name.diff"; false; }'
done
# the drill would be worthless if a rollback gave the same bits: it does not
run "roll" "kill@23:alltoall" --set cluster.replica_every=0
check "replicas off: the run goes back to the checkpoint and says why" \
  '[ $rc -eq 0 ] && grep -q "resuming from .*step-00000020" "$tmp/roll.log" && grep -q "replicas are off" "$tmp/roll.log"'
check "a rollback does not give the planned shrink's bits" \
  '! "$bin/switchyard" ckpt diff "$tmp/roll/step-00000040" "$tmp/palltoall/step-00000040" --tol 0 > /dev/null'
check "the rollback is counted with its lost steps" '[ "$(field roll rollback steps_lost)" = 3 ]'
# replicas copied every 5 steps are 3 steps behind at step 23: exactness needs a rollback,
# and the log says which copy was stale
run "stale" "kill@23:alltoall" --set cluster.replica_every=5
check "replica_every 5: a death at step 23 goes back to the checkpoint, naming the stale copy (rc $rc)" \
  '[ $rc -eq 0 ] && grep -q "rolling back to step 20 because the replica of experts .* was copied at step 20, 3 steps behind" "$tmp/stale.log" && [ -d "$tmp/stale/step-00000040" ]'

# two workers that keep each other's experts die together: both copies of rank 0's experts
# are gone, so the run goes back to the checkpoint and names them. Workers start one at a
# time so that ranks follow the order they registered in.
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" "${SYK[@]}" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --start-workers 3 --min-workers 1 --set checkpoint.dir="$tmp/both" > "$tmp/both.log" 2>&1 &
cpid=$!; pids+=("$cpid")
for i in 1 2 3; do
  fault=""; [ $i -le 2 ] && fault="kill@23:alltoall"
  SWITCHYARD_FAULT=$fault "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" "${SYW[@]}" --threads 1 > "$tmp/both.w$i" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "joined from.*; $i of" "$tmp/both.log" && break; sleep 0.1; done
done
for _ in $(seq 1 600); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
rc=0; wait "$cpid" 2>/dev/null || rc=$?
check "both copies lost: back to the checkpoint, naming the state (rc $rc)" \
  '[ $rc -eq 0 ] && grep -q "rolling back to step 20 because experts 0..0 lost both copies (rank 0 and its buddy rank 1" "$tmp/both.log" && [ -d "$tmp/both/step-00000040" ]'

# a worker stalled past the timeout (SIGSTOP for 2.5 s, then SIGCONT) is declared dead and
# re-homed; once it runs again the coordinator hears its heartbeats and tells it to drop the
# stale assignment (it only stops its step and carries on waiting for the coordinator
# otherwise, out of the mesh for good); it registers again and joins the mesh at a step
# boundary with its state from the live workers
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" "${SYK[@]}" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --start-workers 3 --min-workers 2 --set checkpoint.dir="$tmp/stall" --set train.steps=400 > "$tmp/stall.log" 2>&1 &
cpid=$!; pids+=("$cpid")
for i in 1 2 3; do
  "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" "${SYW[@]}" --threads 1 > "$tmp/stall.w$i" 2>&1 &
  pids+=("$!"); stalled=$!
done
for _ in $(seq 1 100); do grep -q "training at step" "$tmp/stall.log" && break; sleep 0.1; done
sleep 0.5
kill -STOP "$stalled"; sleep 2.5; kill -CONT "$stalled"
for _ in $(seq 1 600); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$cpid" 2>/dev/null; then echo "stall: coordinator still running after 60 s: killed"; kill -9 "$cpid"; fi
rc=0; wait "$cpid" 2>/dev/null || rc=$?
check "a stalled worker is re-homed, comes back at a step boundary, the run completes (rc $rc)" \
  '[ $rc -eq 0 ] && grep -q "re-homing (rank" "$tmp/stall.log" && grep -q "declared dead, is heard again" "$tmp/stall.log" && grep -q "waiting worker at step .*(no checkpoint read)" "$tmp/stall.log" && ! grep -q "\"event\": \"rollback\"" "$tmp/stall/membership.jsonl" && [ -d "$tmp/stall/step-00000400" ]'

# a worker stopped with SIGTERM says it leaves: its share goes to its buddy at once, with
# no heartbeat timeout to wait for and no rollback
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" "${SYK[@]}" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --start-workers 3 --min-workers 2 --set checkpoint.dir="$tmp/term" --set train.steps=300 > "$tmp/term.log" 2>&1 &
cpid=$!; pids+=("$cpid")
for i in 1 2 3; do
  "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" "${SYW[@]}" --threads 1 > "$tmp/term.w$i" 2>&1 &
  pids+=("$!"); leaver=$!
done
for _ in $(seq 1 100); do grep -q "training at step" "$tmp/term.log" && break; sleep 0.1; done
sleep 0.5
kill -TERM "$leaver"
# the status socket reports it while the run goes on
for _ in $(seq 1 50); do
  "$bin/switchyard" status "tcp://127.0.0.1:$sport" "${SYK[@]}" --json > "$tmp/term.status" 2>/dev/null || true
  grep -q '"rehomes": 1' "$tmp/term.status" && break; sleep 0.1
done
check "status: 1 re-homed, 0 rolled back, 0 steps lost, replicas every step" \
  'grep -q "\"rehomes\": 1," "$tmp/term.status" && grep -q "\"rollbacks\": 0," "$tmp/term.status" && grep -q "\"last_steps_lost\": 0," "$tmp/term.status" && grep -q "\"replica_every\": 1," "$tmp/term.status"'
"$bin/switchyard" status "tcp://127.0.0.1:$sport" "${SYK[@]}" 2>/dev/null | grep -E "^replicas|^last failure" || true
for _ in $(seq 1 600); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$cpid" 2>/dev/null; then echo "term: coordinator still running after 60 s: killed"; kill -9 "$cpid"; fi
rc=0; wait "$cpid" 2>/dev/null || rc=$?
rs=$(field term recovered recovery_s)
echo "SIGTERM: the next step completed ${rs:-?} s after the worker said it leaves"
check "a worker leaving on SIGTERM is re-homed at once, no rollback (rc $rc)" \
  '[ $rc -eq 0 ] && grep -q "re-homing (rank [0-9] (.*) left)" "$tmp/term.log" && ! grep -q "\"event\": \"rollback\"" "$tmp/term/membership.jsonl" && [ -d "$tmp/term/step-00000300" ] && awk -v s="${rs:-9}" "BEGIN{exit !(s < 1.0)}"'

[ $fail -eq 0 ] || [ -n "${KEEP:-}" ] || for f in "$tmp"/*.log; do echo "--- $f"; grep -vE "step +[0-9]+/|checkpoint /" "$f" | tail -12; done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
