#!/usr/bin/env bash
# Stand-ins (wire.stand_in, exchange.h): in a layer where that evens out the rows, an
# owner's buddy runs some of the owner's experts on the replica it keeps current. Through
# real processes: the run must equal, bit for bit (every weight and AdamW moment after
# several steps), the same run without stand-ins, and stand-ins must really have run
# (the workers' log lines count the rows). On 2 workers (every split of the experts is
# tried), on 3 (the greedy choice; every rank is an owner, a buddy and a ward), and with
# the bf16 wire (rows that stay on the runner take the wire's rounding too).
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
sy_word_corpus "$tmp/corpus"
sy_prepare "$tmp"/corpus/*.txt
run() { # NAME WORKERS WIRE STAND_IN
  local name=$1 nw=$2
  cat > "$tmp/$name.yaml" <<YAML
model: {d_model: 32, n_layers: 4, n_heads: 2, d_ff: 64, n_experts: 8, switch_every: 2, seq_len: 16}
routing: {capacity_factor: 2.0}
train: {steps: 10, batch_size: 12, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 1, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/$name, every: 10}
cluster: {balance_by_speed: false, replica_every: 1}
wire: {dtype: $3, overlap: true, stand_in: $4, bucket_bytes: 4096}
YAML
  local rc=0
  timeout 180 "$bin/switchyard" up "$tmp/$name.yaml" --workers "$nw" > "$tmp/$name.log" 2>&1 || rc=$?
  check "$name: up --workers $nw exits 0 (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/$name/step-00000010" ]'
}
# rows of the wards' experts the workers ran, summed over their log lines
standin_rows() { # LOG
  { grep -o 'ran [0-9]* rows of its wards' "$1" || true; } | awk '{n += $2} END {print n + 0}'
}
for c in "2 fp32" "3 fp32" "2 bf16"; do
  read -r W D <<< "$c"
  k=$W$D
  run "on$k" "$W" "$D" true
  run "off$k" "$W" "$D" false
  check "$W workers, $D wire: a run with stand-ins equals the run without bit for bit" \
    '"$bin/switchyard" ckpt diff "$tmp/on$k/step-00000010" "$tmp/off$k/step-00000010" --tol 0 > "$tmp/diff$k" 2>&1 || { cat "$tmp/diff$k"; false; }'
  n_on=$(standin_rows "$tmp/on$k.log") n_off=$(standin_rows "$tmp/off$k.log")
  lines_off=$(grep -c 'rows of its wards' "$tmp/off$k.log" || true)
  check "$W workers, $D wire: stand-ins ran ($n_on rows) and none without them ($n_off rows in $lines_off lines)" \
    '[ "$n_on" -gt 0 ] && [ "$n_off" -eq 0 ] && [ "$lines_off" -gt 0 ]'
done
[ $fail -eq 0 ] || { for f in "$tmp"/on*.log; do echo "--- $f"; tail -20 "$f"; done; }
sy_summary
