#!/usr/bin/env bash
# The overlapped gradient all-reduce (wire.overlap) through real processes on loopback:
# with buckets small enough that every layer goes on its own while the backward goes on,
# a run equals, bit for bit (every weight and AdamW moment after several steps), the same
# run with the serial all-reduce; on 2 workers, on 3 (where summation order depends on
# the ring's segments), on 4 workers with 2 experts (2 replicas of each expert: the
# expert gradients are reduced in buckets too) and with the bf16 wire; on 2 and 4 workers
# with the backward's put-off weight gradients filling the exchange's waits (fill_waits).
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
sy_word_corpus "$tmp/corpus"
sy_prepare "$tmp"/corpus/*.txt
run() { # NAME WORKERS EXPERTS WIRE OVERLAP FILL_WAITS
  name=$1 nw=$2
  cat > "$tmp/$1.yaml" <<YAML
model: {d_model: 32, n_layers: 4, n_heads: 2, d_ff: 64, n_experts: $3, switch_every: 2, seq_len: 16}
routing: {capacity_factor: 1.0}
train: {steps: 4, batch_size: 8, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 2, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/$1, every: 4}
cluster: {balance_by_speed: false}
wire: {dtype: $4, overlap: $5, bucket_bytes: 4096, fill_waits: $6}
YAML
  local rc=0
  timeout 120 "$bin/switchyard" up "$tmp/$name.yaml" --workers "$nw" > "$tmp/$name.log" 2>&1 || rc=$?
  check "$name: up --workers $nw exits 0 (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/$name/step-00000004" ]'
}
for c in "2 4 fp32 true" "3 4 fp32 false" "4 2 fp32 true" "2 4 bf16 false"; do
  read -r W E D F <<< "$c"
  run "on$W$D" "$W" "$E" "$D" true "$F"
  run "off$W$D" "$W" "$E" "$D" false false
  k=$W$D
  check "$W workers, $D wire, fill_waits $F: overlapped all-reduce and pipelined expert exchange equal the serial ones bit for bit" \
    '"$bin/switchyard" ckpt diff "$tmp/on$k/step-00000004" "$tmp/off$k/step-00000004" --tol 0 > "$tmp/diff$k" 2>&1 || { cat "$tmp/diff$k"; false; }'
done
# the 4-worker run really had replicated experts (so the expert buckets ran)
check "4 workers with 2 experts: 2 data groups" 'grep -q "data group 1" "$tmp/on4fp32.log"'
[ $fail -eq 0 ] || { for f in "$tmp"/on*.log; do echo "--- $f"; tail -20 "$f"; done; }
sy_summary
