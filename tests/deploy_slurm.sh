#!/usr/bin/env bash
# deploy/slurm/switchyard.sbatch through a real Slurm: a cluster of this one machine
# (munged, slurmctld and two slurmd from Debian's slurm-wlm and munge, the two slurmd
# posing as nodes sya and syb) started in this test's own temp dir, on free ports, with
# its own munge key and socket. A two-node run submitted with `sbatch --wait` must
# finish COMPLETED with exit code 0 on a mesh of two workers (one per node, started by
# srun), its final checkpoint must verify with `switchyard ckpt verify`, and the job's
# output must show the coordinator on the allocation's first node. A worker SIGKILLed
# mid-run: the job goes on with the other one and completes. A job requeued in the
# middle of its run (scontrol requeue) resumes from its checkpoint and ends bit-identical
# to an uninterrupted one. A job with a bad config path fails with the script's message. Skipped (exit 77) with the reason
# where the daemons are not installed or cannot run.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "a private slurmd needs root (running as uid $(id -u))"
for c in munged slurmctld slurmd sbatch scontrol; do
  command -v "$c" > /dev/null || skip "no $c (Debian packages slurm-wlm and munge; scripts/setup.sh installs them)"
done

tmp=$(mktemp -d) || exit 1
chmod 700 "$tmp"
pids=()
cleanup() {
  local p
  # our own cluster's jobs (SLURM_CONF points at it), before its daemons go
  [ -n "${SLURM_CONF:-}" ] && timeout 10 scancel --quiet --user=root 2> /dev/null && sleep 1
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null || true; wait "$p" 2> /dev/null || true; done
  # anything our cluster started that outlived it (slurmstepd, a batch script, a daemon)
  # carries our SLURM_CONF in its environment
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    grep -qsz "^SLURM_CONF=$tmp/slurm.conf\$" "$p/environ" && kill -9 "${p#/proc/}" 2> /dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then echo "kept ${tmp:?}"; else rm -rf "${tmp:?}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail=0 pass=0
check() { if eval "$2"; then pass=$((pass + 1)); echo "ok: $1"; else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- munge: a key and a socket of our own
mkdir -p -m 700 "$tmp/munge"
head -c 1024 /dev/urandom > "$tmp/munge/munge.key"
chmod 400 "$tmp/munge/munge.key"
sock=$tmp/munge/munge.sock
munged -F --force --socket="$sock" --key-file="$tmp/munge/munge.key" --pid-file="$tmp/munge/munged.pid" \
  --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/munged.seed" > "$tmp/munged.out" 2>&1 &
pids+=("$!")
for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || skip "munged did not start: $(tail -3 "$tmp/munged.out" "$tmp/munge/munged.log" 2> /dev/null)"

# --- Slurm: two nodes on this machine (slurmd -N NAME), each with a port of its own
host=$(hostname -s)
ctld_port=$(free_port) port_a=$(free_port) port_b=$(free_port)
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/job"
export SLURM_CONF=$tmp/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=sy$$
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd-%n.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
InactiveLimit=0
KillWait=5
NodeName=sya NodeHostname=$host NodeAddr=127.0.0.1 Port=$port_a CPUs=1 State=UNKNOWN
NodeName=syb NodeHostname=$host NodeAddr=127.0.0.1 Port=$port_b CPUs=1 State=UNKNOWN
PartitionName=test Nodes=sya,syb Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i > "$tmp/slurmctld.out" 2>&1 &
pids+=("$!")
for n in sya syb; do
  slurmd -D -N "$n" > "$tmp/slurmd-$n.out" 2>&1 &
  pids+=("$!")
done
up=0
for _ in $(seq 1 100); do
  st=$(sinfo -h -o %t 2> /dev/null | sort -u | tr '\n' ' ' || true)
  [ "$st" = "idle " ] && [ "$(sinfo -h -o %D 2> /dev/null)" = 2 ] && { up=1; break; }
  sleep 0.2
done
if [ $up = 0 ]; then
  echo "--- slurmctld"; tail -5 "$tmp/slurmctld.out" "$tmp/slurmctld.log" 2> /dev/null || true
  echo "--- slurmd"; tail -5 "$tmp"/slurmd-* 2> /dev/null || true
  skip "a Slurm of this machine did not come up here (node states '${st:-none}' after 20 s; logs above)"
fi
echo "slurm: nodes sya, syb idle (slurmctld port $ctld_port, slurmd ports $port_a, $port_b)"

# --- a short run through the batch script
"$bin/switchyard" prepare --out "$tmp/data" --val-fraction 0.2 --split file $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort) > /dev/null 2>&1
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: 60, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 10, eval_batches: 1, threads: 1}
data: {dir: /nonexistent}
checkpoint: {every: 20, keep: 3}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML
export SWITCHYARD_HOME=$src SWITCHYARD_BIN=$bin SWITCHYARD_CONFIG=$tmp/job.yaml SWITCHYARD_DATA=$tmp/data
export SWITCHYARD_CKPT=$tmp/ckpt SWITCHYARD_PORT=$(free_port) SWITCHYARD_STATUS_PORT=$(free_port)
export SWITCHYARD_THREADS=1
rc=0
timeout 180 sbatch --wait --parsable --nodes=2 --chdir="$tmp/job" --output="$tmp/job/out-%j.txt" \
  "$src/deploy/slurm/switchyard.sbatch" > "$tmp/sbatch.out" 2> "$tmp/sbatch.err" || rc=$?
job=$(head -n 1 "$tmp/sbatch.out" | cut -d';' -f1)
out=$tmp/job/out-$job.txt
state=$(scontrol show job "$job" 2> /dev/null | grep -o 'JobState=[A-Z_]*' || true)
exitc=$(scontrol show job "$job" 2> /dev/null | grep -o ' ExitCode=[0-9:]*' | tr -d ' ' || true)
echo "job $job: $state $exitc (sbatch --wait rc $rc)"
check "sbatch --wait returns 0 for the run" '[ $rc -eq 0 ]'
check "the job is COMPLETED with exit code 0:0" '[ "$state" = JobState=COMPLETED ] && [ "$exitc" = ExitCode=0:0 ]'
check "the coordinator ran on the first node (its NodeAddr) and both workers reached it" \
  'grep -q "on 2 node(s); coordinator tcp://127.0.0.1:$SWITCHYARD_PORT" "$out" && [ "$(grep -c "registering with tcp://127.0.0.1:$SWITCHYARD_PORT" "$out")" = 2 ]'
check "one worker per node: a mesh of 2 workers, min workers 1 from the allocation" \
  'grep -q "mesh of 2 workers" "$out" && grep -q "min workers 1" "$out"'
check "the run trained to the end" 'grep -q "trained to step 60" "$out" && [ -d "$tmp/ckpt/step-00000060" ]'
check "its final checkpoint verifies" '"$bin/switchyard" ckpt verify "$tmp/ckpt/step-00000060" > "$tmp/verify.out" 2>&1'

# --- a worker SIGKILLed mid-run (srun --kill-on-bad-exit=0, sbatch --no-kill): the job
# goes on with the other worker and completes
sed -i 's/steps: 60,/steps: 400,/; s/every: 20,/every: 50,/' "$tmp/job.yaml"
job5=$(SWITCHYARD_CKPT=$tmp/ckpt-kill sbatch --parsable --nodes=2 --chdir="$tmp/job" --output="$tmp/job/kill-%j.txt" \
  "$src/deploy/slurm/switchyard.sbatch" | cut -d';' -f1)
# (a loaded machine can take a while to reach the checkpoint: up to 2 minutes)
for _ in $(seq 1 1200); do [ -d "$tmp/ckpt-kill/step-00000100" ] && break; sleep 0.1; done
# the worker itself, not the srun whose command line names it (whatever flags come first)
victim=$(pgrep -f "^$bin/switchyard-worker .*--coordinator tcp://127.0.0.1:$SWITCHYARD_PORT" | head -n 1 || true)
[ -n "$victim" ] || { echo "no worker process found to kill; processes:"; pgrep -af switchyard || true; }
[ -n "$victim" ] && kill -9 "$victim"
state=""
for _ in $(seq 1 1200); do
  state=$(scontrol show job "$job5" 2> /dev/null | grep -o 'JobState=[A-Z_]*' || true)
  case $state in JobState=COMPLETED | JobState=FAILED | JobState=CANCELLED | JobState=TIMEOUT) break ;; esac
  sleep 0.1
done
[ "$state" = JobState=COMPLETED ] || scancel "$job5" 2> /dev/null || true
kout=$tmp/job/kill-$job5.txt
check "a worker killed mid-run (pid ${victim:-none}): the job goes on with one and completes ($state)" \
  '[ -n "$victim" ] && grep -q "mesh of 1 worker" "$kout" && [ "$state" = JobState=COMPLETED ] && [ -d "$tmp/ckpt-kill/step-00000400" ]'

# --- requeue (what Slurm does when the first node fails, or an operator asks): the
# requeued job's coordinator resumes from the newest checkpoint and the run ends
# bit-identical to an uninterrupted one of the same length on the same worker count
rc=0
SWITCHYARD_CKPT=$tmp/ckpt-base timeout 180 sbatch --wait --parsable --nodes=2 --chdir="$tmp/job" \
  --output="$tmp/job/base-%j.txt" "$src/deploy/slurm/switchyard.sbatch" > "$tmp/sbatch3.out" 2>&1 || rc=$?
check "an uninterrupted 400-step job completes (rc $rc)" '[ $rc -eq 0 ] && [ -d "$tmp/ckpt-base/step-00000400" ]'
job4=$(SWITCHYARD_CKPT=$tmp/ckpt-rq sbatch --parsable --nodes=2 --chdir="$tmp/job" --output="$tmp/job/rq-%j.txt" \
  "$src/deploy/slurm/switchyard.sbatch" | cut -d';' -f1)
for _ in $(seq 1 300); do [ -d "$tmp/ckpt-rq/step-00000100" ] && break; sleep 0.1; done
scontrol requeue "$job4"
# a requeued job waits about two minutes before it is eligible again: start it now
for _ in $(seq 1 50); do
  scontrol show job "$job4" | grep -q 'JobState=PENDING' && scontrol update JobId="$job4" StartTime=now && break
  sleep 0.2
done
state=""
for _ in $(seq 1 1200); do
  state=$(scontrol show job "$job4" 2> /dev/null | grep -o 'JobState=[A-Z_]*' || true)
  case $state in JobState=COMPLETED | JobState=FAILED | JobState=CANCELLED | JobState=TIMEOUT) break ;; esac
  sleep 0.1
done
rq=$tmp/job/rq-$job4.txt
resumed=$(grep -o 'resuming from [^ ]*' "$rq" | tail -n 1 || true)
echo "requeue: job $job4 $state; ${resumed:-no resume line}"
check "the requeued job ran again (restart 1) and completed" \
  'grep -q "job $job4 (restart 1)" "$rq" && [ "$state" = JobState=COMPLETED ]'
check "it resumed from a checkpoint of the first attempt" '[ -n "$resumed" ]'
check "it ends bit-identical to the uninterrupted job" \
  '"$bin/switchyard" ckpt diff "$tmp/ckpt-rq/step-00000400" "$tmp/ckpt-base/step-00000400" --tol 0 > "$tmp/diff.out" 2>&1 || { tail -3 "$tmp/diff.out"; false; }'

# --- a config that does not exist: the script says so and the job fails
rc=0
SWITCHYARD_CONFIG=$tmp/missing.yaml timeout 60 sbatch --wait --parsable --nodes=1 --chdir="$tmp/job" \
  --output="$tmp/job/bad-%j.txt" "$src/deploy/slurm/switchyard.sbatch" > "$tmp/sbatch2.out" 2>&1 || rc=$?
job2=$(head -n 1 "$tmp/sbatch2.out" | cut -d';' -f1)
check "a missing config fails the job with the file named (rc $rc)" \
  '[ $rc -ne 0 ] && grep -q "no config $tmp/missing.yaml" "$tmp/job/bad-$job2.txt"'

if [ $fail -ne 0 ]; then
  for f in "$out" "$tmp/sbatch.err" "$tmp/slurmctld.log" "$tmp"/slurmd-*.log; do echo "--- $f"; tail -20 "$f" 2> /dev/null || true; done
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
