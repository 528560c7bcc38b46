#!/usr/bin/env bash
# The step timeline (switchyard-worker --trace DIR) and its analyzer (bench/trace_split.py).
# A: two workers trace a run: each writes one closed JSON array with a "step" span per step
#    (its rank and epoch) and the step's parts (layers, experts, optimizer, waits), and every message one received has the matching send in the
#    other's file (same step, op, tag, chunk, ranks), sent before the receive ended; the
#    analyzer's critical path is as long as the step and its parts add up.
#    A file from another host with its clock 7 ms off is aligned from the messages.
# B: one worker 20 ms slower every step (SWITCHYARD_FAULT=slow-compute:20, a spin in its
#    compute): the analyzer names the other's wait for it as waiting for another rank, not
#    as communication, and the critical path runs through the slow rank's compute.
# C: a --trace directory that cannot be made stops the worker with a message naming it.
# E: a worker killed at step 15 (its file cut, unclosed) and another taking its place in a
#    new epoch: the analyzer keeps the epochs apart and reads the steps of both.
# D: a trace whose disk fills up (a 128 KB tmpfs; skipped where mount is not permitted)
#    stops tracing with a warning naming the file, and the run goes on to its end.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
py=/usr/bin/python3
drill_job "$tmp/job.yaml" 24 "wire: {overlap: true}"
sed -i 's/d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64/d_model: 64, n_layers: 2, n_heads: 2, d_ff: 256/; s/batch_size: 6, seq_len: 16/batch_size: 8, seq_len: 64/; s/seq_len: 16}/seq_len: 64}/' "$tmp/job.yaml"

# A
coord a "$tmp/job.yaml" 2
worker a.w1 --trace "$tmp/trace_a"; w1=$wpid
worker a.w2 --trace "$tmp/trace_a"; w2=$wpid
wait_exit "$cpid" 120 || true
check "A: the traced run completes (rc $rc)" '[ "$rc" -eq 0 ]'
wait_exit "$w1" 30 || true # the workers close their files as they exit
wait_exit "$w2" 30 || true
check "A: two trace files" '[ "$(ls "$tmp"/trace_a/worker-*.json | wc -l)" -eq 2 ]'
out=$("$py" - "$tmp/trace_a" <<'PY' 2>&1
import glob, json, sys
files = sorted(glob.glob(sys.argv[1] + "/worker-*.json"))
ev = {f: json.load(open(f)) for f in files}  # closed arrays: plain JSON
ranks = set()
sends = {}
for f, es in ev.items():
    steps = sorted(e["args"]["step"] for e in es if e.get("name") == "step")
    assert steps == list(range(24)), "%s: step spans %s" % (f, steps)
    ranks |= {e["args"]["rank"] for e in es if e.get("name") == "step"}
    names = [e.get("name") for e in es]
    for part in ("layer 0 attention", "layer 1 switch", "layer 1 switch backward", "layer 0 feed-forward backward",
                 "forward+backward", "optimizer", "wait: coordinator"):
        assert names.count(part) >= 23, "%s: %d spans '%s'" % (f, names.count(part), part)
    assert "expert" in names and "expert weight gradient" in names, f
    for e in es:
        assert e["ph"] in "XiM", e
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
        if e.get("name") == "send":
            a = e["args"]
            sends[(a["step"], a["op"], a["tag"], a["chunk"], a["src"], a["dst"])] = e["ts"]
assert ranks == {0, 1}, ranks
n = 0
for f, es in ev.items():
    for e in es:
        if e.get("name") != "recv":
            continue
        a = e["args"]
        k = (a["step"], a["op"], a["tag"], a["chunk"], a["src"], a["dst"])
        assert k in sends, "%s: receive without its send: %s" % (f, k)
        assert sends[k] <= e["ts"] + e["dur"], "%s: received before it was sent: %s" % (f, k)
        n += 1
assert n > 0, "no waits traced"
print("ok %d receives matched" % n)
PY
) || true
echo "$out"
check "A: valid, closed, every step and every receive with its send" '[[ "$out" == ok* ]]'
"$py" "$src/bench/trace_split.py" "$tmp/trace_a" --json > "$tmp/split_a.json" 2> "$tmp/split_a.err" || true
# a worker killed before its first step leaves a file with no step; one cut short, a
# truncated last event: the analyzer reads what is whole and gives the same split
mkdir "$tmp/trace_a2"
for f in "$tmp"/trace_a/worker-*.json; do cp -- "$f" "$tmp/trace_a2/"; done
last=$(ls "$tmp"/trace_a2/worker-*.json | tail -1)
head -c $(($(stat -c %s "$last") - 40)) "$last" > "$last.cut" && mv -- "$last.cut" "$last"
head -c 120 "$(ls "$tmp"/trace_a/worker-*.json | head -1)" > "$tmp/trace_a2/worker-1.json"
"$py" "$src/bench/trace_split.py" "$tmp/trace_a2" --json > "$tmp/split_a2.json" 2> "$tmp/split_a2.err" || true
check "A: a cut and an empty trace are read up to their last whole event (same split)" \
  'cmp -s <("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[\"all steps\"][\"exposed_ms\"])" "$tmp/split_a.json") \
          <("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[\"all steps\"][\"exposed_ms\"])" "$tmp/split_a2.json")'
# the second worker's file as if from another machine whose clock is 7 ms ahead: the
# analyzer finds the 7 ms from the messages between them and puts it back on one clock
"$py" - "$tmp/trace_a" "$tmp/trace_far" <<'PY'
import glob, json, os, sys
src, far = sys.argv[1:3]
os.mkdir(far)
for i, f in enumerate(sorted(glob.glob(src + "/worker-*.json"))):
    out = []
    for line in open(f):
        line = line.rstrip("\n")
        body = line.lstrip("[").rstrip(",")
        if i == 1 and body.startswith("{"):
            e = json.loads(body)
            if "ts" in e:
                e["ts"] += 7000.0
            if e["name"] == "process_name":
                e["args"]["host"] = "elsewhere"
            line = ("[" if line.startswith("[") else "") + json.dumps(e) + ("," if line.endswith(",") else "")
        out.append(line)
    open(os.path.join(far, os.path.basename(f)), "w").write("\n".join(out) + "\n")
PY
"$py" "$src/bench/trace_split.py" "$tmp/trace_far" --json > "$tmp/split_far.json" 2> "$tmp/split_far.err" || true
check "A: a file from a host whose clock is 7 ms off is put back on one clock (same split)" '"$py" - "$tmp/split_a.json" "$tmp/split_far.json" <<'"'"'PY'"'"'
import json, sys
a, far = (json.load(open(f)) for f in sys.argv[1:3])
off = far["clock_offsets_us"]["elsewhere"]
print("offset", off, "exposed", a["all steps"]["exposed_ms"], far["all steps"]["exposed_ms"])
assert abs(off - 7000) < 200, off
tol = 0.3 + 0.05 * a["all steps"]["exposed_ms"]
assert abs(far["all steps"]["exposed_ms"] - a["all steps"]["exposed_ms"]) <= tol
assert abs(far["all steps"]["rank_waiting_for_others_ms"] - a["all steps"]["rank_waiting_for_others_ms"]) <= tol
PY'
check "A: the analyzer's parts fit in the step" '"$py" - "$tmp/split_a.json" <<'"'"'PY'"'"'
import json, sys
o = json.load(open(sys.argv[1]))["all steps"]
print(o)
assert o["steps"] >= 18
assert 0 <= o["exposed_ms"] <= o["period_ms"]
assert 0 <= o["rank_communication_ms"] and 0 <= o["rank_waiting_for_others_ms"]
assert o["rank_communication_ms"] + o["rank_waiting_for_others_ms"] <= o["period_ms"]
assert abs(sum(o["exposed_by_kind_ms"].values()) - o["exposed_ms"]) <= 0.5 * o["exposed_ms"] + 1
PY'

# B: a rank 20 ms slower each step is waited for, and that is not communication
coord b "$tmp/job.yaml" 2
SWITCHYARD_FAULT=slow-compute:20 worker b.w1 --trace "$tmp/trace_b"; w1=$wpid
worker b.w2 --trace "$tmp/trace_b"; w2=$wpid
wait_exit "$cpid" 120 || true
check "B: the run with a slow worker completes (rc $rc)" '[ "$rc" -eq 0 ]'
wait_exit "$w1" 30 || true
wait_exit "$w2" 30 || true
"$py" "$src/bench/trace_split.py" "$tmp/trace_b" --json > "$tmp/split_b.json" 2> "$tmp/split_b.err" || true
check "B: the 20 ms wait for the slow rank is waiting for another rank, not communication" '"$py" - "$tmp/split_b.json" "$tmp/split_a.json" <<'"'"'PY'"'"'
import json, sys
o = json.load(open(sys.argv[1]))["all steps"]
a = json.load(open(sys.argv[2]))["all steps"]
print(o)
# the fast rank waits about 20 ms a step: about 10 ms as the mean of the two ranks
assert 4 <= o["rank_waiting_for_others_ms"] <= 18, ("waiting", o)
# had the wait been taken for communication, these would have grown by 10 and 20 ms (A ran
# at another moment, under whatever else the machine ran then: half of that is the margin)
assert o["rank_communication_ms"] < a["rank_communication_ms"] + 5, ("rank communication", o, a)
assert o["exposed_ms"] < a["exposed_ms"] + 10, ("exposed", o, a)
PY'

# C
set +e
"$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:1" --insecure --trace /proc/no/such > "$tmp/c.out" 2>&1
crc=$?
set -e
check "C: an unusable --trace directory: exit 2 naming it (rc $crc)" '[ "$crc" -eq 2 ] && grep -q "/proc/no" "$tmp/c.out"'

# E
drill_job "$tmp/e.yaml" 40 "wire: {overlap: true}"
sed -i 's/d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64/d_model: 64, n_layers: 2, n_heads: 2, d_ff: 256/; s/batch_size: 6, seq_len: 16/batch_size: 8, seq_len: 64/; s/seq_len: 16}/seq_len: 64}/' "$tmp/e.yaml"
coord e "$tmp/e.yaml" 2
worker e.w1 --trace "$tmp/trace_e"; w1=$wpid
SWITCHYARD_FAULT=kill@15:start worker e.w2 --trace "$tmp/trace_e"
wait_for "killing this worker" "$tmp/e.w2" 60 || true
worker e.w3 --trace "$tmp/trace_e"; w3=$wpid
wait_exit "$cpid" 120 || true
check "E: the run goes on past a killed worker to its end (rc $rc)" '[ "$rc" -eq 0 ] && grep -q "trained to step 40" "$tmp/e.log"'
wait_exit "$w1" 30 || true
wait_exit "$w3" 30 || true
"$py" "$src/bench/trace_split.py" "$tmp/trace_e" --skip 0 --json > "$tmp/split_e.json" 2> "$tmp/split_e.err" || true
check "E: three files, the killed worker's cut, and the steps of both epochs in the split" '"$py" - "$tmp/trace_e" "$tmp/split_e.json" <<'"'"'PY'"'"'
import glob, json, sys
files = sorted(glob.glob(sys.argv[1] + "/worker-*.json"))
assert len(files) == 3, files
cut = [f for f in files if not open(f).read().rstrip().endswith("]")]
assert len(cut) == 1, cut
epochs = set()
for f in files:
    for line in open(f):
        if "\"name\":\"step\"" in line:
            epochs.add(json.loads(line.lstrip("[").rstrip().rstrip(","))["args"]["epoch"])
assert len(epochs) == 2, epochs
o = json.load(open(sys.argv[2]))["all steps"]
print(o["steps"], "steps in", len(epochs), "epochs")
# about 14 before the kill and 25 or more after the restart from step 10 or 15
assert o["steps"] >= 30, o
PY'

# D
mkdir "$tmp/full"
if mount -t tmpfs -o size=128k tmpfs "$tmp/full" 2> "$tmp/mount.err"; then
  sy_at_exit 'umount "$tmp/full" 2>/dev/null'
  coord d "$tmp/job.yaml" 2
  worker d.w1 --trace "$tmp/full"
  worker d.w2 --trace "$tmp/full"
  wait_exit "$cpid" 120 || true
  check "D: the run whose trace filled its disk completes (rc $rc)" '[ "$rc" -eq 0 ] && grep -q "trained to step 24" "$tmp/d.log"'
  check "D: the workers say tracing stopped, naming the file" \
    'grep -qE "trace: .*/full/worker-[0-9]+\.json: .*tracing stopped" "$tmp/d.w1" "$tmp/d.w2"'
  set +e
  "$py" "$src/bench/trace_split.py" "$tmp/full" > "$tmp/split_d.out" 2>&1
  drc=$?
  set -e
  check "D: the analyzer reads the cut files without a traceback (rc $drc)" \
    '[ "$drc" -le 2 ] && ! grep -q Traceback "$tmp/split_d.out"'
else
  skip "D: cannot mount a tmpfs here ($(cat "$tmp/mount.err"))"
fi
drill_end
