#!/usr/bin/env bash
# Drill (issue 12, item 6): the address a worker advertises to its peers is not always
# one it can bind (a host name, an address behind NAT). --advertise names what peers
# connect to; --bind-data what the data socket binds (all interfaces by default when
# --advertise is given). A worker advertising a host name must train with its peers.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 20
coord a "$tmp/job.yaml" 2
worker a.w1 --advertise localhost; w1=$wpid
worker a.w2 --advertise 127.0.0.1 --bind-data 127.0.0.1; w2=$wpid
wait_exit "$cpid" 60 || true
check "workers advertising a host name, and one binding an explicit address, train together (rc $rc)" \
  '[ "$rc" -eq 0 ] && [ -d "$tmp/a/step-00000020" ]'
check "the coordinator sees the advertised host name" 'grep -q "joined from tcp://localhost:" "$tmp/a.log"'
check "the worker says where it binds and what it advertises" 'grep -qE "bound (at|on) tcp://0.0.0.0:[0-9]+" "$tmp/a.w1"'
# a bad --bind-data is refused at once, naming it
wkeys
"$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --advertise localhost --bind-data 192.0.2.77 "${wk[@]}" > "$tmp/bad.log" 2>&1 && brc=0 || brc=$?
check "an address this machine does not have for --bind-data is refused, named (rc $brc)" '[ "$brc" -eq 2 ] && grep -q "192.0.2.77" "$tmp/bad.log"'
drill_end
