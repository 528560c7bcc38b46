#!/usr/bin/env bash
# Drill (issue 12, item 5): workers whose data/ is missing or differs, and a coordinator
# without val.bin. The job names a relative data dir, and every process runs in its own
# directory, as on separate machines. A worker without data/ is turned away alone (the
# run goes on with the healthy one); a worker whose data/ holds another corpus is refused
# with both content hashes named (read here from the files' headers, bytes 40..47); a
# coordinator without val.bin says so and fails instead of printing `validation loss nan`
# and exiting 0. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
mkdir -p "$tmp/c" "$tmp/good" "$tmp/none" "$tmp/other" "$tmp/noval/data"
"$bin/switchyard" prepare --out "$tmp/c/data" --val-fraction 0.2 --split file $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort) > "$tmp/prep.out" 2>&1
mkdir "$tmp/good/data" && cp "$tmp/c/data/"*.bin "$tmp/good/data/"
"$bin/switchyard" prepare --out "$tmp/other/data" --val-fraction 0.2 --split file "$src"/worker/*.[ch] > /dev/null 2>&1
cp "$tmp/c/data/train.bin" "$tmp/noval/data/"
hash_of() { /usr/bin/python3 -c "import struct,sys; print('%016x' % struct.unpack('<Q', open(sys.argv[1],'rb').read()[40:48])[0])" "$1"; }
h_ref=$(hash_of "$tmp/c/data/train.bin") h_other=$(hash_of "$tmp/other/data/train.bin")
drill_job "$tmp/job.yaml" 40
sed -i "s|^data: {dir: .*}|data: {dir: data}|" "$tmp/job.yaml"
check "prepare prints the content hash of train.bin ($h_ref)" 'grep -q "$h_ref" "$tmp/prep.out"'

port=$(free_port) sport=$(free_port)
(cd "$tmp/c" && exec "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --min-workers 1 --start-workers 3 "${ckeys[@]}" --set checkpoint.dir="$tmp/run" > "$tmp/coord.log" 2>&1) &
cpid=$!; sy_track "$cpid"
wk() { wkeys; (cd "$tmp/$1" && exec "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 "${wk[@]}" > "$tmp/$1.log" 2>&1) & sy_track "$!"; }
wk good; wk none; wpid_none=${sy_pids[-1]}; wk other; wpid_other=${sy_pids[-1]}
wait_exit "$cpid" 120 || true
check "the run goes on with the healthy worker and completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/run/step-00000040" ]'
check "the worker without data/ is named with the missing file" 'grep -E "train.bin" "$tmp/coord.log" | grep -q "No such file"'
check "the worker with another corpus is refused with both hashes named" 'grep -E "$h_other" "$tmp/coord.log" | grep -q "$h_ref"'
check "the mesh went on with one worker" 'grep -q "mesh of 1 worker" "$tmp/coord.log"'
wait_exit "$wpid_none" 10 || true; rn=$rc
wait_exit "$wpid_other" 10 || true; ro=$rc
check "both turned-away workers exit with a non-zero code (rc $rn, $ro)" '[ "$rn" -ne 0 ] && [ "$rn" -ne 124 ] && [ "$ro" -ne 0 ] && [ "$ro" -ne 124 ]'

# a coordinator without val.bin
port=$(free_port) sport=$(free_port)
(cd "$tmp/noval" && exec "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  --min-workers 1 "${ckeys[@]}" --set checkpoint.dir="$tmp/run2" > "$tmp/noval.log" 2>&1) &
cpid=$!; sy_track "$cpid"
wk good
wait_exit "$cpid" 120 || true
check "a coordinator without val.bin fails (rc $rc), never 'validation loss nan'" '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! grep -qi "validation loss nan" "$tmp/noval.log"'
check "and names val.bin" 'grep -q "val.bin" "$tmp/noval.log"'
drill_end
