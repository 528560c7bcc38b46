#!/usr/bin/env bash
# Validation runs off the coordinator's loop: while the final checkpoint is evaluated
# (here a pass of several seconds, longer than the workers' coordinator timeout) the
# coordinator keeps sending heartbeats, so no worker reports "no word from the
# coordinator" or drops its assignment at the end of the run, and the run still ends
# with its validation loss. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir   # KEEP=1 keeps $tmp
"$bin/switchyard" prepare --out "$tmp/data" --val-fraction 0.5 --split file $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort) > /dev/null 2>&1
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 64, n_layers: 2, n_heads: 2, d_ff: 256, n_experts: 4, switch_every: 2, seq_len: 64}
train: {steps: 4, batch_size: 16, seq_len: 64, warmup_steps: 1, log_every: 2, eval_every: 2, eval_batches: 100, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/run, every: 2}
cluster: {heartbeat_ms: 100, timeout_ms: 1000, balance_by_speed: false}
YAML
rc=0
timeout 300 "$bin/switchyard" up "$tmp/job.yaml" --workers 2 > "$tmp/up.log" 2>&1 || rc=$?
check "up exits 0 (rc $rc)" '[ $rc -eq 0 ]'
check "the run reports its final validation loss" 'grep -q "trained to step 4 .*validation loss [0-9]" "$tmp/up.log"'
check "the validation took longer than the workers' timeout (so the test can fail)" \
  'awk "/checkpoint .*step-00000004/{a=\$1} /trained to step 4/{b=\$1} END{split(a,x,\":\"); split(b,y,\":\"); exit !((y[3]+60*y[2]) - (x[3]+60*x[2]) > 1.0)}" "$tmp/up.log"'
check "no worker lost the coordinator" '! grep -E "no word from the coordinator|lost the coordinator" "$tmp/up.log"'
[ $fail -eq 0 ] || cat "$tmp/up.log"
sy_summary
