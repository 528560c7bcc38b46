#!/usr/bin/env bash
# Drill (issue 12, item 7): limits known only deep inside a distributed run are checked
# when the configuration is read; bad counts on the command line are refused; a run
# whose every checkpoint is corrupt says so instead of quietly starting at step 0.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/job.yaml" 20
# refused_fast NAME PATTERN ARGS...: the coordinator must exit at once (rc 2) naming PATTERN
refused_fast() {
  local name=$1 pat=$2; shift 2
  port=$(free_port) sport=$(free_port)
  "$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
    "${ckeys[@]}" --set checkpoint.dir="$tmp/$name" "$@" > "$tmp/$name.log" 2>&1 &
  cpid=$!; sy_track "$cpid"
  worker "$name.w"
  wait_exit "$cpid" 10 || true
  check "$name: refused at start (rc $rc) naming '$pat'" '[ "$rc" -eq 2 ] && grep -qE -- "$pat" "$tmp/$name.log"'
  kill -9 "$wpid" 2>/dev/null || true
}
refused_fast experts2048 "model.n_experts" --set model.n_experts=2048
refused_fast minus3 "min-workers" --min-workers -3
refused_fast start0 "start-workers" --start-workers 0
refused_fast minworkers_x "min-workers" --min-workers two
check "train refuses 2048 experts at config time too" '! "$bin/switchyard" train "$tmp/job.yaml" --set model.n_experts=2048 --set checkpoint.dir="$tmp/t" > "$tmp/train.log" 2>&1 && grep -q "n_experts" "$tmp/train.log"'

# every checkpoint corrupt: a real run's two checkpoints, both damaged
coord ck "$tmp/job.yaml" 1
worker ck.w
wait_exit "$cpid" 60 || true
check "a run to corrupt completes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/ck/step-00000010" ] && [ -d "$tmp/ck/step-00000020" ]'
truncate -s 100 "$tmp/ck/step-00000020/wte.f32"
/usr/bin/python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[50]^=1; open(p,'wb').write(b)" "$tmp/ck/step-00000010/wte.f32"
port=$(free_port) sport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
  "${ckeys[@]}" --set checkpoint.dir="$tmp/ck" > "$tmp/ck2.log" 2>&1 &
cpid=$!; sy_track "$cpid"
worker ck2.w
wait_exit "$cpid" 30 || true
check "every checkpoint corrupt: refused, not a silent start at step 0 (rc $rc)" '[ "$rc" -eq 2 ] && ! grep -q "training at step 0" "$tmp/ck2.log"'
check "it says every checkpoint is corrupt and how to start over" 'grep -q "corrupt" "$tmp/ck2.log" && grep -q -- "--fresh" "$tmp/ck2.log"'
check "the corrupt checkpoints are left in place" '[ -d "$tmp/ck/step-00000010" ] && [ -d "$tmp/ck/step-00000020" ]'
drill_end
