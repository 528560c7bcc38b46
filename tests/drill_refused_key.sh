#!/usr/bin/env bash
# Drill: a worker whose CURVE handshake the coordinator refuses must stop with status 3
# and say why, even when the refusal comes before it starts watching its control
# socket's handshakes (a loaded machine: seen in a full CI run, where security_drill's
# "a worker with a key not allowed stops with a clear error" hung; once before, the same
# for an --insecure worker against a CURVE coordinator). libzmq never retries a refused
# handshake, so a missed refusal left the worker waiting forever, and then on SIGTERM its
# goodbye to the coordinator blocked forever too (no connection to send on).
# SWITCHYARD_FAULT=slow-monitor puts 0.5 s between connecting and watching, to make that
# order certain, and then has the socket take in the end of the refused connection
# before the first Register: seen once more in a fresh-clone CI run (session 5), where the
# worker's first Register blocked for ever on a DEALER with no connection left (rc 124),
# before its loop ever read the refusal. The worker now reads the refusal first and
# never waits to register.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 100000
coord c "$tmp/job.yaml" 1
wait_for "listening|waiting for" "$tmp/c.log" 30 || true
"$bin/switchyard" keygen "$tmp/stranger" > /dev/null

run_worker() { # LOG [flags]: a worker against the coordinator, 20 s at most; sets rc and ms
  local log=$1 t0
  shift
  t0=$(now_ms)
  rc=0
  SWITCHYARD_FAULT=slow-monitor timeout -k 5 20 "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" \
    --threads 1 "$@" > "$tmp/$log" 2>&1 || rc=$?
  ms=$(($(now_ms) - t0))
}
run_worker stranger.log --cert "$tmp/stranger.secret" --coordinator-key "$tmp/keys/coordinator.key"
check "a worker with a key not allowed stops with status 3 (rc $rc, $ms ms)" '[ "$rc" -eq 3 ]'
check "... saying its key was refused" 'grep -q "refused this process.s CURVE key" "$tmp/stranger.log"'
run_worker plain.log --insecure
check "an --insecure worker against a CURVE coordinator stops with status 3 (rc $rc, $ms ms)" '[ "$rc" -eq 3 ]'
check "... naming the likely cause" 'grep -q "only one side runs --insecure" "$tmp/plain.log"'
drill_end
