#!/usr/bin/env bash
# A short training run of a tiny model on a small corpus: the loss must fall, the
# validation loss must be reported, a checkpoint must verify, and a resumed run must
# continue from it. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
# a corpus from the repository's own text: each C source and header is one document
sy_prepare
check "prepare wrote train and val" '[ -s "$tmp/data/train.bin" ] && [ -s "$tmp/data/val.bin" ]'
cat > "$tmp/tiny.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 32}
routing: {groups: 2}
train: {steps: 60, batch_size: 8, seq_len: 32, lr: 0.01, min_lr: 0.001, warmup_steps: 5, eval_every: 30, eval_batches: 2, log_every: 10, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/run, every: 40, keep: 2}
YAML
rc=0
"$bin/switchyard" train "$tmp/tiny.yaml" > "$tmp/train.out" 2>&1 || rc=$?
check "train exits 0 (got $rc)" '[ $rc -eq 0 ]'
log="$tmp/run/train_log.jsonl"
check "run log written" '[ -s "$log" ]'
first=$(head -1 "$log" 2>/dev/null | sed 's/.*"ce":\([0-9.]*\).*/\1/' || true)
last=$(tail -1 "$log" 2>/dev/null | sed 's/.*"ce":\([0-9.]*\).*/\1/' || true)
check "loss falls: first ce $first, last ce $last" 'awk -v a="$first" -v b="$last" "BEGIN{exit !(b < a - 1.0)}"'
check "validation loss printed" 'grep -q "validation loss [0-9]" "$tmp/train.out"'
check "expert load table printed" 'grep -q "expert load" "$tmp/train.out"'
check "final checkpoint verifies" '"$bin/switchyard" ckpt verify "$tmp/run/step-00000060" > /dev/null 2>&1'
check "periodic checkpoint kept" '[ -d "$tmp/run/step-00000040" ]'
# resume: ten more steps from the saved state
"$bin/switchyard" train "$tmp/tiny.yaml" --set train.steps=70 > "$tmp/resume.out" 2>&1 || true
check "resume continues from step 60" 'grep -q "resuming run .* (step 60" "$tmp/resume.out" && [ -d "$tmp/run/step-00000070" ]'
# bad config: named file, key and reason, non-zero exit
printf 'model:\n  d_model: 30\n  n_heads: 4\n' > "$tmp/bad.yaml"
rc=0
"$bin/switchyard" train "$tmp/bad.yaml" > "$tmp/bad.out" 2>&1 || rc=$?
check "bad config refused with file and key (rc $rc)" '[ $rc -ne 0 ] && grep -q "bad.yaml" "$tmp/bad.out" && grep -q "d_model" "$tmp/bad.out"'
printf 'train:\n  sped: 3\n' > "$tmp/unk.yaml"
"$bin/switchyard" train "$tmp/unk.yaml" > "$tmp/unk.out" 2>&1 || true
check "unknown key refused" 'grep -q "train.sped" "$tmp/unk.out"'
# ckpt diff: a checkpoint equals itself in any argument order; a bad --tol is refused
ck="$tmp/run/step-00000060"
check "ckpt diff of a checkpoint with itself passes" '"$bin/switchyard" ckpt diff --tol 0 "$ck" "$ck" > /dev/null 2>&1'
rc=0
"$bin/switchyard" ckpt diff "$ck" "$ck" --tol x > "$tmp/tol.out" 2>&1 || rc=$?
check "ckpt diff refuses --tol x (rc $rc)" '[ $rc -eq 2 ] && grep -q -- "--tol: \"x\"" "$tmp/tol.out"'
[ $fail -eq 0 ] || { echo "--- train output"; cat "$tmp/train.out"; }
sy_summary
