#!/usr/bin/env bash
# Using a trained model: sample, eval, export and distillation on a tiny model trained
# here on the repository's own text (C sources tagged "c", shell scripts and configs
# tagged "sh"), through the real `switchyard` command and real files.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy=$bin/switchyard
sy_tmpdir   # KEEP=1 keeps $tmp
export SWITCHYARD_THREADS=1

"$sy" prepare --out "$tmp/data" --val-fraction 0.25 --split file --lang c $(find "$src/common" -name "*.c" | LC_ALL=C sort) \
  --lang sh "$src"/scripts/*.sh "$src"/tests/*.sh "$src"/configs/*.yaml > "$tmp/prep.out" 2>&1
# eval capacity 0.5 with 2 groups: a quarter of the tokens or more are dropped, so the
# checks below see capacity at work
cat > "$tmp/tiny.yaml" <<YAML
model: {d_model: 32, n_layers: 4, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 32}
routing: {groups: 2, eval_capacity_factor: 0.5}
train: {steps: 40, batch_size: 8, seq_len: 32, lr: 0.01, min_lr: 0.001, warmup_steps: 5, eval_every: 40, eval_batches: 3, log_every: 10, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/run, every: 0, keep: 2}
YAML
"$sy" train "$tmp/tiny.yaml" > "$tmp/train.out" 2>&1
ck=$tmp/run/step-00000040
check "tiny teacher trained" '[ -d "$ck" ]'

# ---- sample
"$sy" sample "$ck" --prompt "int main" --tokens 50 --temperature 0 > "$tmp/greedy1" 2> "$tmp/s.err"
"$sy" sample "$tmp/run" --prompt "int main" --tokens 50 --temperature 0 > "$tmp/greedy2" 2>/dev/null
check "sample starts with the prompt" '[ "$(head -c 8 "$tmp/greedy1")" = "int main" ]'
check "greedy sampling is deterministic, run dir = its newest checkpoint" 'cmp -s "$tmp/greedy1" "$tmp/greedy2"'
check "tokens/s on stderr" 'grep -q "tokens/s" "$tmp/s.err"'
# 200 bytes need more than the 32-position window: the cache is rebuilt on the way
"$sy" sample "$ck" --tokens 200 --seed 5 --temperature 1 > "$tmp/s5a" 2> "$tmp/s5.err"
"$sy" sample "$ck" --tokens 200 --seed 5 --temperature 1 > "$tmp/s5b" 2>/dev/null
"$sy" sample "$ck" --tokens 200 --seed 6 --temperature 1 > "$tmp/s6" 2>/dev/null
check "same seed, same text; another seed, other text" 'cmp -s "$tmp/s5a" "$tmp/s5b" && ! cmp -s "$tmp/s5a" "$tmp/s6"'
check "window refilled past 32 positions" 'grep -q "[1-9][0-9]* window refill" "$tmp/s5.err"'
# near-uniform bytes: many invalid UTF-8 sequences drawn, the output stays valid UTF-8
"$sy" sample "$ck" --tokens 400 --temperature 50 --top-k 0 --seed 9 > "$tmp/wild" 2>/dev/null
check "output is valid UTF-8 even from random bytes" 'iconv -f UTF-8 -t UTF-8 "$tmp/wild" > /dev/null 2>&1'
check "random bytes did include non-ASCII" 'LC_ALL=C grep -q "[^ -~]" "$tmp/wild"'
rc=0; "$sy" sample "$tmp/nowhere" > /dev/null 2> "$tmp/bad.err" || rc=$?
check "missing checkpoint refused by name (rc $rc)" '[ $rc -ne 0 ] && grep -q "nowhere" "$tmp/bad.err"'
rc=0; "$sy" sample "$ck" --temperature hot > /dev/null 2> "$tmp/bad2.err" || rc=$?
check "bad --temperature refused (rc $rc)" '[ $rc -eq 2 ] && grep -q "temperature" "$tmp/bad2.err"'

# ---- eval
"$sy" eval "$ck" > "$tmp/eval.out" 2>/dev/null
check "eval: a loss row per language and in all" 'grep -q "^c " "$tmp/eval.out" && grep -q "^sh " "$tmp/eval.out" && grep -q "^all " "$tmp/eval.out"'
check "eval: expert shares for both switch layers" 'grep -q "^layer 1:" "$tmp/eval.out" && grep -q "^layer 3:" "$tmp/eval.out"'
# the same batches as training's validation pass give the same loss
"$sy" eval "$ck" --batches 3 > "$tmp/eval3.out" 2>/dev/null
want=$(sed -n 's/.*validation loss \([0-9.]*\) nats.*/\1/p' "$tmp/train.out" | tail -1)
got=$(awk '$1 == "all" {print $3}' "$tmp/eval3.out")
check "eval --batches 3 = train's validation loss ($got vs $want)" '[ -n "$want" ] && [ "$got" = "$want" ]'
dropped=$(awk '/^layer 1:/ {on = 1; next} on && $1 == "c" {print $NF; exit}' "$tmp/eval.out")
check "eval shows tokens dropped at eval capacity 0.5 ($dropped)" '[ -n "$dropped" ] && [ "$dropped" != "0.0%" ]'
rc=0; "$sy" eval "$ck" --data "$tmp/nodata" > /dev/null 2> "$tmp/bad3.err" || rc=$?
check "eval: missing data dir named (rc $rc)" '[ $rc -ne 0 ] && grep -q "nodata" "$tmp/bad3.err"'

# ---- export
"$sy" export "$ck" --format safetensors -o "$tmp/tiny.safetensors" > "$tmp/export.out" 2>&1
check "export wrote the file" '[ -s "$tmp/tiny.safetensors" ] && ! ls "$tmp"/tiny.safetensors.tmp-* > /dev/null 2>&1'
head -c 20000 "$tmp/tiny.safetensors" > "$tmp/header"   # a file: grep -q on a pipe would SIGPIPE head
check "export header names canonical tensors and the config" \
  'grep -a -q "\"layers.1.experts.3.w1\": {\"dtype\": \"F32\", \"shape\": \[32, 64\]" "$tmp/header" &&
   grep -a -q "__metadata__" "$tmp/header"'
rc=0; "$sy" export "$ck" --format onnx -o "$tmp/x.onnx" > /dev/null 2> "$tmp/bad4.err" || rc=$?
check "unknown export format refused (rc $rc)" '[ $rc -eq 2 ] && grep -q "onnx" "$tmp/bad4.err"'
if /usr/bin/python3 -c "import torch" > /dev/null 2>&1; then
  "$sy" eval "$ck" --batches 1 --json > "$tmp/eval1.json" 2>/dev/null
  if /usr/bin/python3 "$src/tests/export_check.py" "$tmp/tiny.safetensors" "$tmp/data/val.bin" "$tmp/eval1.json" 1e-5 \
      > "$tmp/check.out" 2>&1; then pass=$((pass + 1)); else echo "FAIL: PyTorch reproduces the loss"; cat "$tmp/check.out"; fail=$((fail + 1)); fi
  sed 's/^/  /' "$tmp/check.out"
else
  echo "SKIP: /usr/bin/python3 has no torch: the PyTorch check of the export did not run"
fi

# ---- distillation: a dense student of the tiny teacher
"$sy" train "$tmp/tiny.yaml" --set model.switch_every=0 --set checkpoint.dir="$tmp/student" \
  --set train.distill_from="$tmp/run" --set train.steps=20 > "$tmp/distill.out" 2>&1
check "distilled student trained with the soft term logged" \
  'grep -q "distilling from $ck" "$tmp/distill.out" && grep -q "| soft [0-9]" "$tmp/distill.out" && [ -d "$tmp/student/step-00000020" ]'
check "the student's checkpoint records its teacher" 'grep -q "distill_from: \"$tmp/run\"" "$tmp/student/step-00000020/config.yaml"'
rc=0; "$sy" train "$tmp/tiny.yaml" --set checkpoint.dir="$tmp/s2" --set train.distill_from="$tmp/noteacher" \
  > "$tmp/bad5.out" 2>&1 || rc=$?
check "missing teacher refused naming the key (rc $rc)" '[ $rc -ne 0 ] && grep -q "train.distill_from: $tmp/noteacher" "$tmp/bad5.out"'
rc=0; "$sy" train "$tmp/tiny.yaml" --set checkpoint.dir="$tmp/s3" --set model.seq_len=64 --set train.seq_len=64 \
  --set train.distill_from="$ck" > "$tmp/bad6.out" 2>&1 || rc=$?
check "teacher with a shorter context refused (rc $rc)" '[ $rc -ne 0 ] && grep -q "train.distill_from" "$tmp/bad6.out"'

# distributed: 2 workers, each running the teacher on its own rows, equal one process with
# 2 routing groups (the teacher's groups too: its eval capacity drops tokens per group)
cat > "$tmp/eq.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
routing: {groups: 2, capacity_factor: 1.0}
train: {steps: 6, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 2, eval_batches: 1, threads: 1,
        distill_from: "$ck", distill_alpha: 0.7, distill_temperature: 1.5}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/eq1, every: 3}
cluster: {balance_by_speed: false}
YAML
"$sy" train "$tmp/eq.yaml" > "$tmp/eq1.out" 2>&1 || true
rc=0; timeout 120 "$sy" up "$tmp/eq.yaml" --workers 2 --set checkpoint.dir="$tmp/eq2" > "$tmp/eq2.out" 2>&1 || rc=$?
check "distilled run on 2 workers exits 0 (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/eq2/step-00000006" ] && [ -d "$tmp/eq1/step-00000006" ]'
for s in 3 6; do
  check "2 distilling workers equal one process with 2 groups at step $s" \
    '"$sy" ckpt diff "$tmp/eq2/step-0000000$s" "$tmp/eq1/step-0000000$s" --tol 2e-5 > "$tmp/eqdiff.$s" 2>&1 || { cat "$tmp/eqdiff.$s"; false; }'
done
# the teacher changes the result: without it the same run ends elsewhere
"$sy" train "$tmp/eq.yaml" --set train.distill_from= --set checkpoint.dir="$tmp/eq0" > /dev/null 2>&1 || true
check "without the teacher the weights differ" '! "$sy" ckpt diff "$tmp/eq0/step-00000006" "$tmp/eq1/step-00000006" --tol 1e-3 > /dev/null 2>&1'
rc=0; timeout 60 "$sy" up "$tmp/eq.yaml" --workers 1 --set checkpoint.dir="$tmp/eq3" --set train.distill_from="$tmp/gone" \
  > "$tmp/eq3.out" 2>&1 || rc=$?
check "workers name a missing teacher (rc $rc)" '[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "train.distill_from: $tmp/gone" "$tmp/eq3.out"'

[ $fail -eq 0 ] || { echo "--- train output"; cat "$tmp/train.out"; echo "--- eval"; cat "$tmp/eval.out"; }
sy_summary
