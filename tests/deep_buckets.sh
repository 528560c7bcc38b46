#!/usr/bin/env bash
# A deep model with a bucket per half-layer: the communication thread's queue holds every
# bucket of a step, the replica jobs and the norm's sums of squares at once. With 96 layers
# (every second a switch layer) and 4-byte buckets a step queues about 290 items; the
# queue held 256 and the norm's sums took places of their own, so such a run failed
# every step ("reducer: more than 256 parts queued") and gave up (found in review,
# session 5). The run must train its steps on 2 workers and end with the same bits as
# the serial all-reduce.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
sy_word_corpus "$tmp/corpus"
sy_prepare "$tmp"/corpus/*.txt
run() { # NAME OVERLAP
  local name=$1
  cat > "$tmp/$name.yaml" <<YAML
model: {d_model: 16, n_layers: 96, n_heads: 2, d_ff: 32, n_experts: 4, switch_every: 2, seq_len: 8}
train: {steps: 4, batch_size: 4, seq_len: 8, lr: 0.01, warmup_steps: 1, log_every: 1, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/$name, every: 4}
cluster: {balance_by_speed: false, replica_every: 1}
wire: {overlap: $2, bucket_bytes: 4}
YAML
  local rc=0
  timeout 300 "$bin/switchyard" up "$tmp/$name.yaml" --workers 2 > "$tmp/$name.log" 2>&1 || rc=$?
  check "$name: 96 layers, a bucket per half-layer: up --workers 2 exits 0 (rc $rc)" \
    '[ $rc -eq 0 ] && [ -d "$tmp/$name/step-00000004" ]'
  check "$name: no step failed" '! grep -q "parts queued\|failed" "$tmp/$name.log"'
}
run on true
run off false
check "overlapped and serial end with the same bits" \
  '"$bin/switchyard" ckpt diff "$tmp/on/step-00000004" "$tmp/off/step-00000004" --tol 0 > "$tmp/diff" 2>&1 || { cat "$tmp/diff"; false; }'
[ $fail -eq 0 ] || { for f in "$tmp"/*.log; do echo "--- $f"; grep -i "error\|fail" "$f" | head -5; done; }
sy_summary
