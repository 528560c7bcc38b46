#!/usr/bin/env bash
# Drill (issue 12, item 2): SIGTERM to the coordinator and its workers at the same
# moment (a service manager stopping a machine). Everyone must exit within a bound: the
# coordinator must not start a recovery and wait for workers forever, and a worker
# blocked in a data wait (its peer stopped with SIGSTOP, a long heartbeat timeout) must
# honour SIGTERM at once. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 100000

# exited_in_time PART WHAT: waits (30 s at most) for the coordinator $cpid signalled at
# $t0 and checks it exited within 10 s; sets crc
exited_in_time() {
  local ms
  wait_exit "$cpid" 30 || true
  crc=$rc
  ms=$(($(now_ms) - t0))
  check "$1: $2 (rc $crc, $ms ms)" '[ "$crc" -ne 124 ] && [ $ms -lt 10000 ]'
}
# stopped_on_signal PART LOG: it said so (rc 130) and never began to wait for workers after it
stopped_on_signal() {
  local log=$2 # named: check's eval sees its own $2
  check "$1: it says it stopped on a signal (rc 130)" '[ "$crc" -eq 130 ]'
  check "$1: it never starts waiting for workers after the signal" \
    '[ -s "$log" ] && ! sed -n "/signal 15/,\$p" "$log" | grep -q "waiting for workers"'
}

# A: coordinator and 3 workers, SIGTERM to all four in one kill(1)
coord a "$tmp/job.yaml" 1 --start-workers 3
ws=()
for i in 1 2 3; do worker "a.w$i"; ws+=("$wpid"); done
wait_for "checkpoint .*step-00000020" "$tmp/a.log" 60
t0=$(now_ms)
kill -TERM "$cpid" "${ws[@]}"
exited_in_time A "the coordinator exits within 10 s of a SIGTERM shared with its workers"
stopped_on_signal A "$tmp/a.log"
check "A: it names the checkpoint a restart resumes from" 'grep -qE "(resume|restart).*step-000000[0-9]+" "$tmp/a.log"'
alive=0; for p in "${ws[@]}"; do wait_exit "$p" 5 || alive=$((alive + 1)); done
check "A: every worker has exited" '[ $alive -eq 0 ]'

# C: the stop must not wait on a mesh that fell apart. One worker is gone (SIGKILL: no
# word, its connection closed), then the coordinator and the other worker get SIGTERM. The
# survivor's leaving arrives after the signal, while the dead worker's heartbeats are still
# recent: re-homing its share onto the dead one fails to send, and the coordinator must
# stop there, not wait in an empty pool for workers until the stop deadline (63 s).
coord c "$tmp/job.yaml" 1 --start-workers 2
worker c.w1; w1=$wpid
worker c.w2; w2=$wpid
wait_for "checkpoint .*step-00000010" "$tmp/c.log" 60
kill -9 "$w1"
sleep 0.05
t0=$(now_ms)
kill -TERM "$cpid"
sleep 0.1
kill -TERM "$w2" 2> /dev/null || true # it may have gone already, told to by the stopping coordinator
exited_in_time C "with one worker killed, the coordinator exits within 10 s of a SIGTERM"
stopped_on_signal C "$tmp/c.log"
wait_exit "$w2" 5 || true

# D: a validation pass in flight (a long one: 2 million batches) does not hold the exit:
# the coordinator used to join its thread, so a Ctrl-C waited for the whole pass
drill_job "$tmp/val.yaml" 100000
sed -i 's/eval_every: 0, eval_batches: 1/eval_every: 10, eval_batches: 2000000/' "$tmp/val.yaml"
coord d "$tmp/val.yaml" 1 --start-workers 2
worker d.w1; w1=$wpid
worker d.w2; w2=$wpid
wait_for "checkpoint .*step-00000010" "$tmp/d.log" 60
sleep 0.5
t0=$(now_ms)
kill -TERM "$cpid" "$w1" "$w2"
exited_in_time D "with a validation running, the coordinator exits within 10 s of a SIGTERM"
check "D: the validation was still running when it stopped" '! grep -q "validation loss" "$tmp/d.log"'
wait_exit "$w1" 5 || true
wait_exit "$w2" 5 || true

# B: a worker blocked in a data wait honours SIGTERM: its peer is frozen (SIGSTOP) and
# the heartbeat timeout is long, so nothing but the signal can end the wait
drill_job "$tmp/slow.yaml" 100000 "cluster: {heartbeat_ms: 200, timeout_ms: 30000, balance_by_speed: false}"
sed -i '/^cluster: {heartbeat_ms: 200, timeout_ms: 1500/d' "$tmp/slow.yaml"
coord b "$tmp/slow.yaml" 2 --start-workers 2
worker b.w1; w1=$wpid
worker b.w2; w2=$wpid
wait_for "checkpoint .*step-00000010" "$tmp/b.log" 60
kill -STOP "$w2"
sleep 1
t0=$(now_ms)
kill -TERM "$w1"
wait_exit "$w1" 20 || true
ms=$(($(now_ms) - t0))
check "B: a worker waiting for a frozen peer leaves within 2 s of SIGTERM ($ms ms)" '[ $ms -lt 2000 ]'
kill -CONT "$w2" 2>/dev/null || true
kill -TERM "$cpid" "$w2" 2>/dev/null || true
wait_exit "$cpid" 30 || true
drill_end
