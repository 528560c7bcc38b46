#!/usr/bin/env bash
# Distributed training through real processes on loopback:
#  - a run on 2 and on 3 workers equals one process with 2 and 3 routing groups
#    (weights and AdamW moments after several steps, every tensor);
#  - bf16 wire trains to nearly the same loss;
#  - when `switchyard up` ends, no worker or coordinator process and no bound port stay.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
# A corpus of its own, the same whatever the source tree holds: the equality checks below
# compare two summation orders after several AdamW steps, and how far those drift apart
# depends on the data, so data that changed with every edit of common/ made them flaky.
sy_word_corpus "$tmp/corpus"
sy_prepare "$tmp"/corpus/*.txt
for W in 2 3; do
  cat > "$tmp/eq$W.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
routing: {groups: $W, capacity_factor: 1.0}
train: {steps: 6, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 2, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/single$W, every: 3}
cluster: {balance_by_speed: false}   # equal shares: worker k holds group k's rows
YAML
  "$bin/switchyard" train "$tmp/eq$W.yaml" > "$tmp/single$W.log" 2>&1 || true
  check "single process with $W groups trains" '[ -d "$tmp/single$W/step-00000006" ]'
  rc=0
  timeout 120 "$bin/switchyard" up "$tmp/eq$W.yaml" --workers $W --set checkpoint.dir="$tmp/dist$W" > "$tmp/dist$W.log" 2>&1 || rc=$?
  check "up --workers $W exits 0 (rc $rc)" '[ $rc -eq 0 ]'
  check "$W workers joined" '[ "$(grep -c "joined from" "$tmp/dist$W.log")" -eq $W ]'
  for s in 3 6; do
    check "$W workers equal one process with $W groups at step $s" \
      '"$bin/switchyard" ckpt diff "$tmp/dist$W/step-0000000$s" "$tmp/single$W/step-0000000$s" --tol 2e-5 > "$tmp/diff$W.$s" 2>&1 || { cat "$tmp/diff$W.$s"; false; }'
  done
  check "the distributed run reports a validation loss" 'grep -q "validation loss [0-9]" "$tmp/dist$W.log"'
  # nothing left behind: processes and ports
  ports=$(grep -oE 'tcp://127\.0\.0\.1:[0-9]+' "$tmp/dist$W.log" | sed 's/.*://' | sort -u || true)
  check "no switchyard-worker or coordinator left running" '! pgrep -f "switchyard-(worker|coordinator).*$tmp" > /dev/null && ! pgrep -P $$ -f switchyard- > /dev/null'
  for p in $ports; do
    check "port $p is free again" '! ss -ltn "sport = :$p" | grep -q LISTEN'
  done
done
# bf16 wire: same run, the loss within bf16 rounding of the fp32 one
timeout 120 "$bin/switchyard" up "$tmp/eq2.yaml" --workers 2 --wire bf16 --set checkpoint.dir="$tmp/bf16" > "$tmp/bf16.log" 2>&1 || true
check "bf16 wire run exits 0" '[ -d "$tmp/bf16/step-00000006" ]'
l32=$(grep -o 'step      6/6 | loss [0-9.]*' "$tmp/dist2.log" | awk '{print $NF}' || true)
l16=$(grep -o 'step      6/6 | loss [0-9.]*' "$tmp/bf16.log" | awk '{print $NF}' || true)
check "bf16 loss $l16 close to fp32 loss $l32" 'awk -v a="$l32" -v b="$l16" "BEGIN{d=a-b; if (d<0) d=-d; exit !(a > 0 && d < 0.02)}"'
check "bf16 run is not bit-identical to fp32 (the wire really is bf16)" '! "$bin/switchyard" ckpt diff "$tmp/bf16/step-00000006" "$tmp/dist2/step-00000006" --tol 1e-9 > /dev/null 2>&1'
# a coordinator on a port that is taken: one clear line, non-zero exit
python3 -c "import socket,time,sys; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1]); sys.stdout.flush(); time.sleep(20)" > "$tmp/port" &
holder=$!; sy_track "$holder"
for _ in $(seq 1 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
p=$(cat "$tmp/port")
rc=0
timeout 60 "$bin/switchyard-coordinator" "$tmp/eq2.yaml" --bind "tcp://127.0.0.1:$p" --min-workers 1 --status "tcp://127.0.0.1:$(free_port)" --insecure > "$tmp/busy.log" 2>&1 || rc=$?
kill "$holder" 2>/dev/null || true
check "coordinator on a busy port fails clearly (rc $rc)" '[ $rc -ne 0 ] && grep -q "cannot bind the control socket at tcp://127.0.0.1:$p" "$tmp/busy.log"'
# Ctrl-C on `up`: the step in flight finishes, a checkpoint is saved, everything stops
"$bin/switchyard" up "$tmp/eq2.yaml" --workers 2 --set train.steps=100000 --set checkpoint.dir="$tmp/intr" > "$tmp/intr.log" 2>&1 &
up=$!; sy_track "$up"
for _ in $(seq 1 300); do grep -q "training at step" "$tmp/intr.log" && break; sleep 0.1; done
sleep 1
kill -INT "$up"
for _ in $(seq 1 300); do kill -0 "$up" 2>/dev/null || break; sleep 0.1; done
rc=0
wait "$up" || rc=$?
check "Ctrl-C: up exits 130 (rc $rc)" '[ $rc -eq 130 ]'
check "Ctrl-C: a checkpoint was saved and verifies" 'd=$(ls -d "$tmp"/intr/step-* | tail -1); [ -n "$d" ] && "$bin/switchyard" ckpt verify "$d" > /dev/null'
ports=$(grep -oE 'tcp://127\.0\.0\.1:[0-9]+' "$tmp/intr.log" | sed 's/.*://' | sort -u || true)
for p in $ports; do
  check "Ctrl-C: port $p is free again" '! ss -ltn "sport = :$p" | grep -q LISTEN'
done
[ $fail -eq 0 ] || { for f in "$tmp"/dist*.log; do echo "--- $f"; tail -20 "$f"; done; }
sy_summary
