#!/usr/bin/env bash
# Security drill (issue 11): the attacks that broke an unprotected run, against a live
# `switchyard up` (CURVE on, its default): forged gradient chunks and junk all-to-all
# frames with the current epoch on both of a worker's data ports (the main one and the
# overlap thread's), a fake worker registering and
# heartbeating, a Register and an Error envelope under a live worker's id, 260 fake
# registrations. Each comes as a stranger (its own CURVE key), in plain ZeroMQ, and where
# it makes sense as an insider (a key on the allow-list that is not in the mesh). None
# may change the trained weights (final checkpoint bit-identical to an undisturbed run,
# ckpt diff --tol 0) or stop the run. A control run with --insecure shows the drill can
# fail: the forged gradient chunks then do change the weights.
# Then, on an --insecure coordinator (where forged input reaches the handlers): a routing
# id with a newline cannot forge a log line, the member table has room for real workers
# after a flood, and rejections are rate-limited.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir   # KEEP=1 keeps $tmp
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND"' ERR
attack() { "$bin/sy-attack" "$@"; }

sy_prepare
STEPS=${SY_DRILL_STEPS:-1500}
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: $STEPS, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 50, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 50, keep: 2}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML
# worker-2's key is on the allow-list but no worker uses it: the insider's key
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 3 > /dev/null
final=$(printf 'step-%08d' "$STEPS")

# 1. the undisturbed run
timeout 300 "$bin/switchyard" up "$tmp/job.yaml" --workers 2 --keys "$tmp/keys" --set checkpoint.dir="$tmp/base" \
  > "$tmp/base.log" 2>&1
check "undisturbed run completes" '[ -d "$tmp/base/$final" ]'

# 2. the same run under attack
"$bin/switchyard" up "$tmp/job.yaml" --workers 2 --keys "$tmp/keys" --set checkpoint.dir="$tmp/att" \
  > "$tmp/att.log" 2>&1 &
up=$!; sy_track "$up"
wait_for "workers ready for epoch" "$tmp/att.log" 60
ST=$(grep -oE 'status tcp://127\.0\.0\.1:[0-9]+' "$tmp/att.log" | head -1 | sed 's/status //')
CO=$(grep -oE 'coordinator on tcp://127\.0\.0\.1:[0-9]+' "$tmp/att.log" | head -1 | sed 's/coordinator on //')
"$bin/switchyard" status "$ST" --keys "$tmp/keys" --json > "$tmp/st.json"
get() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$tmp/st.json" "$1"; }
epoch=$(get 'd["epoch"]'); step=$(get 'd["step"]')
id0=$(get '[w["id"] for w in d["workers"] if w["rank"]==0][0]')
data1=$(get '[w["endpoint"] for w in d["workers"] if w["rank"]==1][0]')
# rank 1's second data socket (the overlap thread's, wire.overlap): the other port its process listens on
id1=$(get '[w["id"] for w in d["workers"] if w["rank"]==1][0]')
pid1=$(echo "$id1" | cut -d: -f2)
red1=$(ss -H -ltnp 2> /dev/null | grep "pid=$pid1," | awk '{print $4}' | grep -v ":${data1##*:}\$" | head -1)
check "rank 1 (pid $pid1) listens on a second data port, the overlap thread's" '[ -n "$red1" ]'
red1=tcp://$red1
echo "attacking epoch $epoch from step $step: coordinator $CO, rank 1's data socket $data1 and overlap socket $red1, rank 0 is $id0"
K=$tmp/keys
stranger_c=(--server-key "$K/coordinator.key")
insider_c=(--server-key "$K/coordinator.key" --cert "$K/workers/worker-2.secret")
apids=()
for who in stranger plain insider; do
    case $who in
      stranger) c=("${stranger_c[@]}"); d0=(--server-key "$K/workers/worker-0.key"); d1=(--server-key "$K/workers/worker-1.key") ;;
      plain) c=(); d0=(); d1=() ;;
      insider) c=("${insider_c[@]}"); d0=(--server-key "$K/workers/worker-0.key" --cert "$K/workers/worker-2.secret")
               d1=(--server-key "$K/workers/worker-1.key" --cert "$K/workers/worker-2.secret") ;;
    esac
    # which worker key rank 1 holds is not known here: try both
    attack forge-grad --data "$data1" --epoch "$epoch" --step $((step + 100)) --count 300 "${d0[@]}" > "$tmp/a.forge0.$who" 2>&1 & apids+=($!)
    attack forge-grad --data "$data1" --epoch "$epoch" --step $((step + 100)) --count 300 "${d1[@]}" > "$tmp/a.forge1.$who" 2>&1 & apids+=($!)
    attack junk-a2a --data "$data1" --epoch "$epoch" --step $((step + 100)) --count 50 "${d0[@]}" > "$tmp/a.junk0.$who" 2>&1 & apids+=($!)
    attack junk-a2a --data "$data1" --epoch "$epoch" --step $((step + 100)) --count 50 "${d1[@]}" > "$tmp/a.junk1.$who" 2>&1 & apids+=($!)
    attack forge-grad --data "$red1" --epoch "$epoch" --step $((step + 100)) --count 300 "${d0[@]}" > "$tmp/a.rforge0.$who" 2>&1 & apids+=($!)
    attack forge-grad --data "$red1" --epoch "$epoch" --step $((step + 100)) --count 300 "${d1[@]}" > "$tmp/a.rforge1.$who" 2>&1 & apids+=($!)
    attack junk-a2a --data "$red1" --epoch "$epoch" --step $((step + 100)) --count 50 "${d1[@]}" > "$tmp/a.rjunk1.$who" 2>&1 & apids+=($!)
    attack reuse-id --coord "$CO" --id "$id0" "${c[@]}" > "$tmp/a.reuse.$who" 2>&1 & apids+=($!)
    attack spoof-error --coord "$CO" --id "$id0" --epoch "$epoch" "${c[@]}" > "$tmp/a.error.$who" 2>&1 & apids+=($!)
    if [ $who != insider ]; then # an insider's key is a worker's key: it may join, by design
      attack fake-worker --coord "$CO" --seconds 4 "${c[@]}" > "$tmp/a.fake.$who" 2>&1 & apids+=($!)
      attack flood --coord "$CO" --count 260 --seconds 4 "${c[@]}" > "$tmp/a.flood.$who" 2>&1 & apids+=($!)
    fi
done
wait "${apids[@]}"
check "the run was still training when the attacks ended (else raise SY_DRILL_STEPS)" 'kill -0 $up'
for _ in $(seq 1 1200); do kill -0 $up 2> /dev/null || break; sleep 0.1; done
rc=0; wait $up || rc=$?
cat "$tmp"/a.* | sed 's/^/  attacker /'
check "the attacked run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/att/$final" ]'
check "final checkpoint bit-identical to the undisturbed run" \
  '"$bin/switchyard" ckpt diff "$tmp/base/$final" "$tmp/att/$final" --tol 0 > "$tmp/diff" 2>&1 || { tail -3 "$tmp/diff"; false; }'
check "the mesh never changed (no recovery, one epoch)" '! grep -q "recovering" "$tmp/att.log" && [ "$(grep -c "workers ready for epoch" "$tmp/att.log")" -eq 1 ]'
check "no attacker got a single message back" '! cat "$tmp"/a.* | awk "/received/ && !/received 0 messages/ { f = 1 } END { exit !f }"'
check "the coordinator refused the attackers' connections (logged)" 'grep -q "control socket: refused a connection" "$tmp/att.log"'
check "rank 1 held or refused the forged data connections (logged)" 'grep -qE "data socket: (refused|holding) a connection" "$tmp/att.log"'
check "rejections are rate-limited (< 200 warning lines)" '[ "$(grep -c "refused a connection" "$tmp/att.log")" -lt 200 ]'
check "no log line was forged" '! grep -q "^FAKE LOG LINE" "$tmp/att.log"'

# 3. control: without CURVE the forged gradient chunks change the weights
"$bin/switchyard" up "$tmp/job.yaml" --workers 2 --insecure --set checkpoint.dir="$tmp/ins" > "$tmp/ins.log" 2>&1 &
up=$!; sy_track "$up"
wait_for "workers ready for epoch" "$tmp/ins.log" 60
ST=$(grep -oE 'status tcp://127\.0\.0\.1:[0-9]+' "$tmp/ins.log" | head -1 | sed 's/status //')
"$bin/switchyard" status "$ST" --json > "$tmp/st.json"
epoch=$(get 'd["epoch"]'); step=$(get 'd["step"]')
data1=$(get '[w["endpoint"] for w in d["workers"] if w["rank"]==1][0]')
attack forge-grad --data "$data1" --epoch "$epoch" --step $((step + 100)) --count 300 > "$tmp/ctl.forge" 2>&1
for _ in $(seq 1 1200); do kill -0 $up 2> /dev/null || break; sleep 0.1; done
wait $up || true
check "control (--insecure): the same forged chunks change the run" \
  '! "$bin/switchyard" ckpt diff "$tmp/base/$final" "$tmp/ins/$final" --tol 0 > /dev/null 2>&1'
check "control (--insecure): up says loudly that security is off" 'grep -q "NO CURVE" "$tmp/ins.log"'

# 4. hygiene where forged input reaches the handlers (--insecure): a coordinator that
# waits for 256 workers (the most --start-workers takes) meets a flood of 260, a newline in a routing id, a reused id
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --start-workers 256 --insecure --status "tcp://127.0.0.1:$sport" \
  --max-pending 16 --set checkpoint.dir="$tmp/hyg" > "$tmp/hyg.log" 2>&1 &
cpid=$!; sy_track "$cpid"
sleep 0.5
attack flood --coord "tcp://127.0.0.1:$port" --count 260 --seconds 3 > "$tmp/hyg.flood" 2>&1
attack reuse-id --coord "tcp://127.0.0.1:$port" --id "$(printf 'evil\n12:00:00.000 [coordinator] FAKE')" > /dev/null 2>&1
sleep 2.5 # the flood's workers fall silent and are declared dead
"$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 --insecure > "$tmp/hyg.w" 2>&1 &
sy_track "$!"
wait_for "joined from" "$tmp/hyg.w" 1 || true
sleep 1.5
kill "$cpid" 2> /dev/null || true; wait "$cpid" 2> /dev/null || true
check "at most 16 fake workers admitted to the table" '[ "$(grep -c "joined from tcp://127.0.0.1:9" "$tmp/hyg.log")" -le 16 ]'
check "the rest were refused: too many waiting" 'grep -q "workers already wait to join" "$tmp/hyg.log"'
check "refusals are rate-limited with a count" 'grep -q "similar lines suppressed\|counted, not printed" "$tmp/hyg.log" && [ "$(wc -l < "$tmp/hyg.log")" -lt 200 ]'
# (awk, not grep -v | grep -q: under pipefail the first grep dies of SIGPIPE on a long log)
check "a real worker still joins after the flood" 'awk "/joined from/ && !/tcp:\/\/127\.0\.0\.1:9 / { f = 1 } END { exit !f }" "$tmp/hyg.log"'
check "a routing id with a newline forged no log line" '! grep -q "^12:00:00.000 \[coordinator\] FAKE" "$tmp/hyg.log" && grep -q "malformed routing id" "$tmp/hyg.log"'
# 5. admission (--insecure): a fake worker that registers and heartbeats but never
# finishes admission (no Ready within 10 peer timeouts, or a third Register while in
# the mesh) is removed, may not come back under its id, and a real worker then trains
# the run to its end (before: "step 0 failed 5 times in a row: giving up")
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --min-workers 1 --insecure --status "tcp://127.0.0.1:$sport" \
  --set cluster.timeout_ms=500 --set train.steps=20 --set checkpoint.dir="$tmp/adm" > "$tmp/adm.log" 2>&1 &
cpid=$!; sy_track "$cpid"
attack fake-worker --coord "tcp://127.0.0.1:$port" --seconds 14 > "$tmp/adm.fake" 2>&1 &
fpid=$!; sy_track "$fpid"
wait_for "never finished admission" "$tmp/adm.log" 20 || true
sleep 2.5 # the fake keeps registering under its id meanwhile
"$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 --insecure > "$tmp/adm.w" 2>&1 &
sy_track "$!"
for _ in $(seq 1 600); do kill -0 $cpid 2> /dev/null || break; sleep 0.1; done
rc=0; wait $cpid || rc=$?
wait $fpid 2> /dev/null || true
check "admission: the fake worker was removed" 'grep -qE "(not ready 5 s after its assignment|registered again without getting ready): removed" "$tmp/adm.log"'
check "admission: its id was refused afterwards" 'grep -q "never finished admission" "$tmp/adm.log" && grep -q "was removed: it never finished admission" "$tmp/adm.log"'
check "admission: the real worker trained the run to its end (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/adm/step-00000020" ]'
# 6. a worker whose key is not allowed, or that has the wrong coordinator key, or runs
# --insecure against a CURVE coordinator, says so and stops (libzmq never retries a
# refused handshake: before, such a worker waited silently forever)
port=$(free_port); sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --keys "$K" --set checkpoint.dir="$tmp/keyed" > "$tmp/keyed.log" 2>&1 &
cpid=$!; sy_track "$cpid"
"$bin/switchyard" keygen "$tmp/stranger" > /dev/null
w6() { timeout 30 "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 "$@" > "$tmp/w6.log" 2>&1; }
rc=0; w6 --cert "$tmp/stranger.secret" --coordinator-key "$K/coordinator.key" || rc=$?
check "a worker with a key not allowed stops with a clear error (rc $rc)" '[ $rc -eq 3 ] && grep -q "refused this process.s CURVE key" "$tmp/w6.log"'
rc=0; w6 --cert "$K/workers/worker-0.secret" --coordinator-key "$tmp/stranger.key" || rc=$?
check "a worker with the wrong coordinator key stops with a clear error (rc $rc)" '[ $rc -eq 3 ] && grep -q "CURVE handshake with .* failed" "$tmp/w6.log"'
rc=0; w6 --insecure || rc=$?
check "an --insecure worker against a CURVE coordinator stops with a clear error (rc $rc)" '[ $rc -eq 3 ] && grep -q "only one side runs --insecure" "$tmp/w6.log"'
kill "$cpid" 2> /dev/null || true; wait "$cpid" 2> /dev/null || true
grep -hE "refused|dropped|suppressed" "$tmp/att.log" | sed "s/^/  run: /" | head -12 || true
[ $fail -eq 0 ] || { echo "--- attacked run:"; grep -vE "step .*/" "$tmp/att.log" | tail -30; echo "--- hygiene:"; tail -20 "$tmp/hyg.log"; echo "--- admission:"; grep -v "step " "$tmp/adm.log" | tail -20; }
sy_summary
