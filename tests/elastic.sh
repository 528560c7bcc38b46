#!/usr/bin/env bash
# Elastic drills with real processes and SIGKILL: a worker killed inside an all-to-all,
# inside the gradient all-reduce and while sending its checkpoint shards; the coordinator
# killed while a checkpoint is half written and restarted; corrupt checkpoints skipped;
# a resume on another worker count; a worker joining at a checkpoint boundary. Checks
# that every run finishes, that nothing before the last complete checkpoint is lost, and
# that a run interrupted and resumed on the same worker count ends bit-identical to an
# uninterrupted one. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir   # KEEP=1 keeps $tmp

sy_prepare
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: 60, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 10, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 10, keep: 10}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML

# CURVE keys for every process (one worker key, shared: the allow-list may hold any number)
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 1 > /dev/null
wkey=(--cert "$tmp/keys/workers/worker-0.secret" --coordinator-key "$tmp/keys/coordinator.key")
# coord NAME MIN_WORKERS [extra args]: starts a coordinator on a free port, sets $port
coord() {
  local name=$1 min=$2; shift 2
  port=$(free_port)
  "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --min-workers "$min" --status "tcp://127.0.0.1:$(free_port)" \
    --keys "$tmp/keys" --set checkpoint.dir="$tmp/$name" "$@" >> "$tmp/$name.log" 2>&1 &
  cpid=$!; sy_track "$cpid"
}
worker() { # worker LOG [FAULT]
  SWITCHYARD_FAULT=${2:-} "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 "${wkey[@]}" >> "$tmp/$1" 2>&1 &
  sy_track "$!"
}
finish() { # wait for the coordinator to exit, with a bound
  for _ in $(seq 1 ${SY_TEST_WAIT:-1200}); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$cpid" 2>/dev/null; then echo "coordinator still running: killed"; kill -9 "$cpid" 2>/dev/null || true; fi
  rc=0
  wait "$cpid" 2>/dev/null || rc=$?
  sleep 0.3
}

# A: the uninterrupted run, 3 workers
coord base 3; for i in 1 2 3; do worker base.w$i; done; finish
check "uninterrupted run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/base/step-00000060" ]'

# B: a worker SIGKILLed inside the step-25 all-to-all; a replacement arrives; min 3 workers
# (the replacement starts once the killed worker's death is handled: a recovery of another
# kind, e.g. a Register that crossed the first Assignment on a loaded machine, must not
# let it in early, or it joins the mesh at step 10 and the run re-homes at step 25)
coord same 3; worker same.w1; worker same.w2; worker same.w3 kill@25:alltoall
wait_for "recovering \(rank [0-9]+ \([^)]*\) died\)" "$tmp/same.log" 60 && worker same.w4
finish
check "B: run with a killed worker completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/same/step-00000060" ]'
check "B: the death was noticed and the run went back to step 20" 'grep -q "resuming from .*step-00000020" "$tmp/same.log"'
check "B: killed-and-resumed on 3 workers ends bit-identical to the uninterrupted run" \
  '"$bin/switchyard" ckpt diff "$tmp/same/step-00000060" "$tmp/base/step-00000060" --tol 0 > "$tmp/B.diff" || { tail -3 "$tmp/B.diff"; false; }'
rec=$(grep -o 'recovered: first step after the restart done [0-9.]* s' "$tmp/same.log" | awk '{print $(NF-1)}' || true)
echo "B: death to first step after resume: ${rec:-?} s (heartbeat timeout 1.5 s)"

# C: a worker killed inside the gradient all-reduce; go on with 2; a new worker joins at a boundary
# (the first mesh waits for all 3, so the only mesh of 2 is the one after the kill; the
# re-homed run goes on at once, so it trains 400 steps to leave the joiner time to start)
coord fewer 2 --start-workers 3 --set train.steps=400 --set checkpoint.keep=100
worker fewer.w1; worker fewer.w2; worker fewer.w3 kill@33:allreduce
check "C: recovery on 2 workers" 'wait_for "mesh of 2 workers" "$tmp/fewer.log" 60'
worker fewer.w4
finish
check "C: run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/fewer/step-00000400" ]'
check "C: the joiner was admitted at a checkpoint boundary" 'grep -q "admitting 1 waiting worker" "$tmp/fewer.log"'
check "C: every checkpoint from 10 to 60 verifies" 'for s in 10 20 30 40 50 60; do "$bin/switchyard" ckpt verify "$tmp/fewer/step-000000$s" > /dev/null || exit 1; done'

# D: a worker killed while sending its checkpoint-20 shards, replicas off (with replicas the
# run re-homes instead: tests/rehome.sh): that checkpoint never commits
coord dsave 2 --set cluster.replica_every=0; worker dsave.w1; worker dsave.w2 kill@19:save; worker dsave.w3
finish
check "D: run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/dsave/step-00000060" ]'
check "D: resumed from step 10 (the half-sent checkpoint 20 was dropped)" 'grep -q "resuming from .*step-00000010" "$tmp/dsave.log"'

# E: the coordinator killed with checkpoint 30 half written, then restarted
port=$(free_port)
SWITCHYARD_FAULT=kill@30:save "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --min-workers 2 --status "tcp://127.0.0.1:$(free_port)" \
  --keys "$tmp/keys" --set checkpoint.dir="$tmp/ecoord" >> "$tmp/ecoord.log" 2>&1 &
cpid=$!; sy_track "$cpid"
worker ecoord.w1; worker ecoord.w2
finish
check "E: the coordinator died of the drill" 'grep -q "half written" "$tmp/ecoord.log" && [ ! -d "$tmp/ecoord/step-00000030" ] && [ -d "$tmp/ecoord/step-00000020" ]'
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --min-workers 2 --status "tcp://127.0.0.1:$(free_port)" \
  --keys "$tmp/keys" --set checkpoint.dir="$tmp/ecoord" > "$tmp/ecoord2.log" 2>&1 &
cpid=$!; sy_track "$cpid"
finish
check "E: the restarted coordinator takes the workers back and finishes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/ecoord/step-00000060" ]'
check "E: it resumed from step 20" 'grep -q "resuming from .*step-00000020" "$tmp/ecoord2.log"'
check "E: the half-written checkpoint left nothing behind" '! ls -a "$tmp/ecoord" | grep -q "^\.tmp"'

# F: corrupt checkpoints are skipped with the reason; resume on 2 workers after 3 saved
# (the uninterrupted run's checkpoints are needed: without them F has nothing to corrupt)
[ -d "$tmp/base/step-00000040" ] || { echo "FAIL: F needs run A's checkpoints"; exit 1; }
cp -r -- "${tmp:?}/base" "${tmp:?}/corrupt"
rm -rf -- "${tmp:?}/corrupt/step-00000060" "${tmp:?}/corrupt/step-00000050"
f="$tmp/corrupt/step-00000040/layers.0.attn.wqkv.f32"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[100]^=0x10; open(p,'wb').write(b)" "$f"
truncate -s 100 "$tmp/corrupt/step-00000030"/wte.f32
head -c 200 "$tmp/corrupt/step-00000020/manifest" > "$tmp/m" && cp "$tmp/m" "$tmp/corrupt/step-00000020/manifest"
coord corrupt 2; worker corrupt.w1; worker corrupt.w2
finish
check "F: resumes past a bit flip, a truncated tensor and a truncated manifest (rc $rc)" '[ $rc -eq 0 ] && grep -q "resuming from .*step-00000010" "$tmp/corrupt.log" && [ -d "$tmp/corrupt/step-00000060" ]'
check "F: each skipped checkpoint is named" 'grep -q "step-00000040" "$tmp/corrupt.log" && grep -q "step-00000030" "$tmp/corrupt.log" && grep -q "step-00000020" "$tmp/corrupt.log"'
check "F: saved on 3 workers, resumed on 2" 'grep -q "mesh of 2 workers" "$tmp/corrupt.log"'

# G: switchyard up --workers 3: SIGKILL one worker, the run goes on with 2; a worker
# started by hand against up's coordinator joins again at the next checkpoint
"$bin/switchyard" up "$tmp/job.yaml" --workers 3 --keys "$tmp/upkeys" --set checkpoint.dir="$tmp/upk" --set train.steps=400 > "$tmp/upk.log" 2>&1 &
up=$!; sy_track "$up"
wait_for "training at step 0" "$tmp/upk.log" 30 || true
victim=$(pgrep -P "$up" -f switchyard-worker | head -1 || true)
if [ -n "$victim" ]; then kill -9 "$victim"; else echo "FAIL: no worker of up ($up) found to kill"; fail=$((fail + 1)); fi
check "G: up recovers on 2 workers after a SIGKILL" 'wait_for "mesh of 2 workers" "$tmp/upk.log" 20'
ep=$(grep -oE "coordinator on tcp://127\.0\.0\.1:[0-9]+" "$tmp/upk.log" | head -1 | sed "s/coordinator on //" || true)
"$bin/switchyard-worker" --coordinator "$ep" --threads 1 --cert "$tmp/upkeys/workers/worker-0.secret" \
  --coordinator-key "$tmp/upkeys/coordinator.key" > "$tmp/upk.w" 2>&1 & sy_track "$!"
check "G: the restarted worker is brought back in" 'wait_for "admitting 1 waiting worker" "$tmp/upk.log" 20'
for _ in $(seq 1 600); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
rc=0
wait "$up" || rc=$?
check "G: the run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/upk/step-00000400" ]'

[ $fail -eq 0 ] || [ -n "${KEEP:-}" ] || for f in "$tmp"/*.log; do echo "--- $f"; grep -vE "step +[0-9]+/|checkpoint /" "$f" | tail -15; done
sy_summary
