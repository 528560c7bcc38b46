#!/usr/bin/env bash
# The re-homing drill of issue 14: a 3-worker run in which one worker at a time is
# SIGKILLed at a random moment (SY_KILLS times, 3 by default; the `heavy` ctest label
# runs the issue's 10) and a fresh worker is started, which joins at the next step boundary
# with its state from the live workers (worker/handover.h).
# Every death must be re-homed from the replicas (no rollback: membership.jsonl has no
# rollback event and every recovery lost 0 steps beyond the step in flight), and the
# final weights must equal, bit for bit, a run that made the same changes by plan: the
# same ranks leaving (--leave STEP:RANK) and standbys joining (--join-at STEP) at the
# steps the drill's run logged. SY_SEED fixes the random moments.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
kills=${SY_KILLS:-3}
if [ -n "${SY_REQUIRE_HEAVY:-}" ] && [ "${SY_HEAVY:-}" != 1 ]; then
  echo "skipped: the heavy drill runs with SY_HEAVY=1 (SY_HEAVY=1 scripts/test.sh -L heavy)"
  exit 77
fi
RANDOM=${SY_SEED:-$$}
# $tmp, CURVE keys, processes killed at exit, check, coord, worker, wait_exit
. "$src/tests/lib/drill.sh"
count() { grep -c "$1" "$2" 2>/dev/null || true; }
wait_count() { # wait_count PATTERN FILE N SECONDS: until PATTERN occurs N times in FILE
  for _ in $(seq 1 $(($4 * 10))); do [ "$(count "$1" "$2")" -ge "$3" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $3 x '$1' in $2"; return 1
}

sy_prepare
# a constant learning rate: the planned run stops where the drill was stopped
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: 1000000, batch_size: 6, seq_len: 16, lr: 0.003, schedule: constant, warmup_steps: 2, log_every: 100, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 50, keep: 3}
cluster: {heartbeat_ms: 200, timeout_ms: 1000, balance_by_speed: false, replica_every: 1}
YAML

# the drill
coord drill "$tmp/job.yaml" 2 --start-workers 3
live=()
for _ in 1 2 3; do worker drill.workers; live+=("$wpid"); done
mem=$tmp/drill/membership.jsonl
for k in $(seq 1 "$kills"); do
  # the mesh of 3 (the first, or the one a joiner made) has trained for a while
  wait_count "all 3 workers ready" "$tmp/drill.log" "$k" 60
  sleep "$(printf '0.%03d' $((RANDOM % 1000)))"; sleep 0.3
  i=$((RANDOM % 3)) victim=${live[$i]}
  kill -9 "$victim"
  echo "kill $k: worker pid $victim at $(date +%T.%N | cut -c1-12)"
  wait_count '"event": "recovered"' "$mem" "$k" 30
  worker drill.workers
  live[$i]=$wpid
done
wait_count "all 3 workers ready" "$tmp/drill.log" $((kills + 1)) 60
sleep 0.3
kill -INT "$cpid"
wait_exit "$cpid" 30 || true
last=$(ls -d "$tmp"/drill/step-* | tail -1) final=$((10#${last##*step-}))
check "the drill stopped cleanly with a checkpoint (rc $rc: 130 = stopped by signal)" '[ $rc -eq 130 ] && [ "$final" -gt 0 ]'
check "$kills deaths, $kills re-homed" '[ "$(count "\"event\": \"rehome\"" "$mem")" -eq "$kills" ]'
check "no rollback, no checkpoint read after the start" \
  '[ "$(count "\"event\": \"rollback\"" "$mem")" -eq 0 ] && ! grep -q "resuming from" "$tmp/drill.log"'
check "every fresh worker joined at a step boundary with its state from the live workers" \
  '[ "$(count "waiting worker at step .*(no checkpoint read)" "$tmp/drill.log")" -eq "$kills" ]'
check "every recovery lost 0 steps beyond the step in flight" \
  '[ "$(grep "\"event\": \"recovered\"" "$mem" | grep -vc "\"steps_lost\": 0,")" -eq 0 ]'
secs=$(grep '"event": "recovered"' "$mem" | grep -oE '"recovery_s": [0-9.]+' | awk '{print $2}' | sort -n | tr '\n' ' ')
det=$(grep '"event": "recovered"' "$mem" | grep -oE '"detect_s": [0-9.]+' | awk '{print $2}' | sort -n | tr '\n' ' ')
echo "death to next completed step, s (sorted): $secs; of which noticing the death (timeout 1 s): $det"

# the same changes by plan
args=()
while read -r s r; do args+=(--leave "$s:$r"); done < <(grep '"event": "rehome"' "$mem" |
  sed -E 's/.*"step": ([0-9]+), "rank": ([0-9]+).*/\1 \2/')
while read -r s; do args+=(--join-at "$s"); done < <(grep '"event": "join"' "$mem" | sed -E 's/.*"step": ([0-9]+).*/\1/')
echo "planned: ${args[*]} to step $final"
coord plan "$tmp/job.yaml" 2 --start-workers 3 --set train.steps="$final" "${args[@]}"
for _ in 1 2 3; do worker plan.workers; done
wait_exit "$cpid" 120 || true
check "the planned run completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$last" ] && [ -d "$tmp/plan/${last##*/}" ]'
check "the planned run made the same $kills leaves and joins" \
  '[ "$(count "(planned)" "$tmp/plan.log")" -ge "$kills" ] && [ "$(count "\"event\": \"join\"" "$tmp/plan/membership.jsonl")" -eq "$(count "\"event\": \"join\"" "$mem")" ]'
check "the drill's final weights equal the planned run's bit for bit" \
  '"$bin/switchyard" ckpt diff "$last" "$tmp/plan/${last##*/}" --tol 0 > "$tmp/diff" || { tail -3 "$tmp/diff"; false; }'

[ $fail -eq 0 ] || [ -n "${KEEP:-}" ] || { echo "--- $mem"; tail -15 "$mem"; }
drill_end
