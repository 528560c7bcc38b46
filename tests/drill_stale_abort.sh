#!/usr/bin/env bash
# Drill: an Abort of the old epoch that the heartbeat thread checks just before the new
# epoch's Assignment is applied. The thread compared the Abort's epoch with the worker's,
# then raised the abort flag; the main thread had cleared the flag for the new epoch in
# between, so the new epoch's first step stopped for nothing: the worker dropped it without
# a word and its peers waited for its data until their timeout (seen under load in
# tests/rehome.sh's planned shrinks: "no data from rank 0 within 60.0 s", then a rollback).
# SWITCHYARD_FAULT=stale-abort opens the window on purpose: the heartbeat thread takes
# 0.4 s between the check and the flag, the main thread applies the re-homing Assignment
# 0.2 s late; a planned leave sends the Abort and the new Assignment together.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 300 # long enough to be training when the stale flag would land

coord run "$tmp/job.yaml" 2 --start-workers 3 --leave 12:2 --join-at 0
for i in 1 2 3; do SWITCHYARD_FAULT=stale-abort worker "w$i"; done
wait_exit "$cpid" 60 || true
check "the run completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/run/step-00000300" ]'
check "the planned leave happened" 'grep -q "leaves before step 12 (planned)" "$tmp/run.log"'
check "the Abort reached a remaining worker's heartbeat thread" 'grep -qh "abort from the coordinator" "$tmp/w1" "$tmp/w2" "$tmp/w3"'
check "no step was stopped or waited out: no recovery after the re-homing" \
  '! grep -q "recovering" "$tmp/run.log" && ! grep -qh "no data from rank" "$tmp/w1" "$tmp/w2" "$tmp/w3" "$tmp/run.log"'
drill_end
