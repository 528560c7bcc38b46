#!/usr/bin/env bash
# Drill (issue 12, item 3): the checkpoint directory's file system fills up during a run
# (a 2 MB tmpfs mounted in the drill's own temp dir; skipped, saying so, where mount is
# not permitted). The run must stop with a clear error naming the failed checkpoint and
# the reason, name a last checkpoint that verifies, never claim a save that did not
# happen, and leave run_log.jsonl whole: every line one complete JSON record.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
mkdir "$tmp/full"
if ! mount -t tmpfs -o size=2m tmpfs "$tmp/full" 2> "$tmp/mount.err"; then
  skip "cannot mount a tmpfs here ($(cat "$tmp/mount.err")): the disk-full drill needs root and mount(2)"
  exit 77
fi
sy_at_exit 'umount "$tmp/full" 2>/dev/null'
sy_prepare
drill_job "$tmp/job.yaml" 200
coord coord "$tmp/job.yaml" 2 --set checkpoint.dir="$tmp/full/run"
worker w1; worker w2
wait_exit "$cpid" 120 || true
echo "coordinator rc $rc; $(ls "$tmp/full/run" | tr '\n' ' ')"
check "the run stops with an error when a checkpoint cannot be written (rc $rc)" '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]'
check "it stops at the failed checkpoint, not at the end of training" '[ ! -d "$tmp/full/run/step-00000200" ] && ! grep -q "trained to step 200" "$tmp/coord.log"'
check "the error names the checkpoint and the reason" 'grep -qE "checkpoint.*step-?0*[0-9]+.*No space left on device|No space left on device.*step" "$tmp/coord.log"'
claimed=$(grep -oE "model saved in [^ ]+" "$tmp/coord.log" | awk '{print $4}' || true)
check "no save is claimed that did not happen ('${claimed}')" '[ -z "$claimed" ] || [ -d "$claimed" ]'
last=$(grep -oE "last checkpoint[^/]*(/[^ ]+step-[0-9]+)" "$tmp/coord.log" | grep -oE "/[^ ]+step-[0-9]+" | tail -1 || true)
check "it names the last checkpoint ('$last') and that one verifies" '[ -n "$last" ] && "$bin/switchyard" ckpt verify "$last" > "$tmp/verify.out" 2>&1'
check "no temporary checkpoint directory is left behind" '! ls -a "$tmp/full/run" | grep -q "^\.tmp"'
check "run_log.jsonl: every line is one whole JSON record" '/usr/bin/python3 -c "
import json, sys
data = open(sys.argv[1], \"rb\").read()
assert data.endswith(b\"\\n\"), \"last record cut\"
for i, l in enumerate(data.split(b\"\\n\")[:-1]):
    r = json.loads(l); assert \"step\" in r, i
print(len(data.split(b\"\\n\")) - 1, \"records\")
" "$tmp/full/run/run_log.jsonl"'

# B: the run log itself fills the disk (64 KB, no checkpoint before the last step): its
# records stay whole, the gap is named, and the final save fails loudly
mkdir "$tmp/tiny"
mount -t tmpfs -o size=64k tmpfs "$tmp/tiny"
sy_at_exit 'umount "$tmp/tiny" 2>/dev/null'
drill_job "$tmp/b.yaml" 400
sed -i 's/^checkpoint: {every: 10, keep: 10}/checkpoint: {every: 0, keep: 10}/' "$tmp/b.yaml"
coord b "$tmp/b.yaml" 1 --set checkpoint.dir="$tmp/tiny/run"
worker b.w1
wait_exit "$cpid" 120 || true
check "B: a full disk under the run log is named" 'grep -q "run_log.jsonl: No space left on device" "$tmp/b.log"'
check "B: the final save fails loudly, no model claimed (rc $rc)" '[ "$rc" -eq 1 ] && ! grep -q "model saved in" "$tmp/b.log" && grep -q "no checkpoint .* verifies" "$tmp/b.log"'
check "B: run_log.jsonl: every line is one whole JSON record" '/usr/bin/python3 -c "
import json, sys
data = open(sys.argv[1], \"rb\").read()
assert data.endswith(b\"\\n\"), \"last record cut\"
for l in data.split(b\"\\n\")[:-1]: json.loads(l)
print(len(data.split(b\"\\n\")) - 1, \"records\", len(data), \"bytes\")
" "$tmp/tiny/run/run_log.jsonl"'
drill_end
