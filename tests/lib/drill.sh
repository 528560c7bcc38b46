# tests/lib/drill.sh: helpers for the failure drills (tests/drill_*.sh), sourced, not run.
# A drill starts real coordinators and workers on free loopback ports in its own temp
# directory, and kills only the processes it started. Expects $bin and $src set.
# It builds on tests/lib/common.sh ($tmp and the EXIT trap, sy_track, sy_at_exit, check,
# free_port, wait_for, sy_prepare), sourced here.
# The drills run under `set -euo pipefail`; sourcing this file keeps it so:
set -euo pipefail
. "$src/tests/lib/common.sh"
bin=$(cd "$bin" && pwd) || exit 1
sy_tmpdir
# CURVE is on as in production: the keys of `switchyard keygen --cluster` in $tmp/keys;
# coord and worker pass them, a drill starting processes itself uses $ckeys (coordinator,
# status client) and wkeys (the next worker's key pair, in the array $wk).
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 8 > "$tmp/keygen.out" 2>&1 ||
  { cat "$tmp/keygen.out"; echo "FAIL: switchyard keygen"; exit 1; }
ckeys=(--keys "$tmp/keys")
drill_nkey=0
wkeys() { # sets wk to the CURVE flags of the next worker (8 keys, reused round-robin)
  wk=(--cert "$tmp/keys/workers/worker-$((drill_nkey % 8)).secret" --coordinator-key "$tmp/keys/coordinator.key")
  drill_nkey=$((drill_nkey + 1))
}
skip() { echo "SKIP: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# waits (bounded) for pid $1 to exit; sets rc (124 when it had to be killed)
wait_exit() {
  local i
  for i in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then echo "pid $1 still running after $2 s: killed"; kill -9 "$1"; wait "$1" 2>/dev/null; rc=124; return 1; fi
  rc=0; wait "$1" 2>/dev/null || rc=$?
  return 0
}
# a job for the corpus of sy_prepare (tiny model: drills test failure handling, not speed)
drill_job() { # drill_job FILE STEPS [extra yaml lines]
  local f=$1 steps=$2; shift 2
  cat > "$f" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: $steps, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 10, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {every: 10, keep: 10}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML
  local l
  for l in "$@"; do echo "$l" >> "$f"; done
}
# coord NAME JOB MIN [args]: a coordinator on free ports; sets port, sport, cpid
coord() {
  local name=$1 job=$2 min=$3; shift 3
  port=$(free_port)
  sport=$(free_port)
  "$bin/switchyard-coordinator" "$job" --bind "tcp://127.0.0.1:$port" --status "tcp://127.0.0.1:$sport" \
    --min-workers "$min" "${ckeys[@]}" --set checkpoint.dir="$tmp/$name" "$@" >> "$tmp/$name.log" 2>&1 &
  cpid=$!; sy_track "$cpid"
}
# worker LOG [args]: a worker for the coordinator on $port; sets wpid
worker() {
  local log=$1; shift
  wkeys
  "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$port" --threads 1 "${wk[@]}" "$@" >> "$tmp/$log" 2>&1 &
  wpid=$!; sy_track "$wpid"
}
# steps lost and seconds to the next step of the first recovery in a coordinator log
recovery_figures() { # recovery_figures LOG RUNLOG -> "lost SECONDS"
  local secs lost
  secs=$(grep -o 'first step after the restart done [0-9.]* s' "$1" | head -1 | awk '{print $(NF-1)}' || true)
  lost=$(/usr/bin/python3 - "$2" <<'PY' 2>/dev/null
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
for a, b in zip(recs, recs[1:]):
    if b["epoch"] != a["epoch"]:
        print(a["step"] - (b["step"] - 1)); break
else:
    print("?")
PY
) || true
  echo "${lost:-?} ${secs:-?}"
}
drill_end() {
  [ $fail -eq 0 ] || [ -n "${KEEP:-}" ] || for f in "$tmp"/*.log; do echo "--- $f"; grep -vE "step +[0-9]+/" "$f" | tail -20; done
  sy_summary
}
