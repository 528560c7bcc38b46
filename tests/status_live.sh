#!/usr/bin/env bash
# The status socket against a live run of real processes: replies decode and change as
# the run does (waiting -> training -> recovering -> training -> done), per-expert shares
# sum to 1 per layer, a SIGKILLed worker shows as dead and the run as recovered, a client
# that never reads its replies does not stall training, and garbage on the socket (raw
# bytes, and well-framed ZeroMQ messages that are not a StatusRequest) gets an error reply
# or is dropped while the coordinator keeps answering. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir
sy_prepare
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 1, seq_len: 16}
train: {steps: 100000, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 100, eval_every: 0, eval_batches: 1, threads: 1}
data: {dir: $tmp/data}
checkpoint: {dir: $tmp/run, every: 20, keep: 2}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML
cport=$(free_port); sport=$(free_port)
# CURVE on every socket: the status client needs the operator key (--keys DIR)
"$bin/switchyard" keygen --cluster "$tmp/keys" --workers 3 > /dev/null
ST="tcp://127.0.0.1:$sport"
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$cport" --status "$ST" --min-workers 2 --keys "$tmp/keys" > "$tmp/coord.log" 2>&1 &
cpid=$!; sy_track "$cpid"
sleep 0.5
js() { "$bin/switchyard" status "$ST" --keys "$tmp/keys" --json --timeout 3000 2> "$tmp/status.err"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
state=$(js | field 'd["state"]' || true)
check "before any worker: '$state'" '[ "$state" = "waiting for workers" ]'
wpids=()
for i in 1 2 3; do
  "$bin/switchyard-worker" --coordinator "tcp://127.0.0.1:$cport" --threads 1 \
    --cert "$tmp/keys/workers/worker-$((i - 1)).secret" --coordinator-key "$tmp/keys/coordinator.key" > "$tmp/w$i.log" 2>&1 &
  sy_track "$!"; wpids+=("$!")
done
running() { grep -qE "^(training|checkpointing)$"; }  # a save step reports "checkpointing"
# three members training, and the run itself too: a third worker that registers after the
# first mesh of two joins at a checkpoint, and while that mesh is handed out its members
# already show "training" but the run is "assigning" or "recovering"
for _ in $(seq 1 300); do
  js > "$tmp/s1.json" 2>/dev/null && [ "$(field 'len([w for w in d["workers"] if w["state"]=="training"])' < "$tmp/s1.json" 2>/dev/null)" = 3 ] &&
    { field 'd["state"]' < "$tmp/s1.json" 2>/dev/null | running; } && break
  sleep 0.1
done
check "training with 3 workers" 'field "d[\"state\"]" < "$tmp/s1.json" | running && [ "$(field "len([w for w in d[\"workers\"] if w[\"state\"]==\"training\"])" < "$tmp/s1.json")" = 3 ]'
check "per-expert shares sum to 1 in every switch layer" 'field "all(abs(sum(e[\"share\"] for e in d[\"experts\"] if e[\"layer\"]==l)-1)<1e-6 for l in set(e[\"layer\"] for e in d[\"experts\"]))" < "$tmp/s1.json" | grep -q True'
check "languages come with the expert rows" '[ "$(field "len(d[\"languages\"])" < "$tmp/s1.json")" -ge 1 ]'
s1=$(field 'd["step"]' < "$tmp/s1.json" || echo 0)

# a client that stops reading (SIGSTOP) while it polls fast must not stall training
# (--watch takes 0.1 s at the shortest: 0.01 was refused, so no client was ever stuck)
"$bin/switchyard" status "$ST" --keys "$tmp/keys" --watch 0.1 > /dev/null 2> "$tmp/watch.err" &
wpid=$!; sy_track "$wpid"
sleep 0.5
check "the watching client runs ($(head -c 200 "$tmp/watch.err"))" 'kill -STOP "$wpid" 2>/dev/null'
sleep 2
s2=$(js | field 'd["step"]' || echo 0)
check "training goes on while a client is stuck (step $s1 -> $s2)" '[ "$s2" -gt $((s1 + 5)) ]'
kill -9 "$wpid" 2>/dev/null || true

# garbage: raw bytes, then well-framed ZeroMQ messages that are not StatusRequests
# (sent through libzmq itself, via ctypes)
python3 - "$sport" "$tmp/keys" > "$tmp/fuzz.out" 2>&1 <<'PY' || true
import ctypes, ctypes.util, os, random, re, socket, sys
port = int(sys.argv[1]); random.seed(7)
def key(path, name):  # a CURVE key from a ZeroMQ certificate file
    return re.search(name + r' = "(.{40})"', open(path).read()).group(1).encode()
srv = key(sys.argv[2] + "/coordinator.key", "public-key")
pub = key(sys.argv[2] + "/clients/operator.secret", "public-key")
sec = key(sys.argv[2] + "/clients/operator.secret", "secret-key")
for i in range(20):  # raw garbage, not ZeroMQ at all
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1); s.sendall(os.urandom(random.randint(1, 300))); s.close()
    except OSError: pass
z = ctypes.CDLL(ctypes.util.find_library("zmq") or "libzmq.so.5")
z.zmq_ctx_new.restype = ctypes.c_void_p
z.zmq_socket.restype = ctypes.c_void_p
z.zmq_socket.argtypes = [ctypes.c_void_p, ctypes.c_int]
z.zmq_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
z.zmq_send.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
z.zmq_recv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
z.zmq_setsockopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
z.zmq_close.argtypes = [ctypes.c_void_p]
ctx = z.zmq_ctx_new()
ZMQ_DEALER, ZMQ_SNDMORE, ZMQ_RCVTIMEO, ZMQ_LINGER = 5, 2, 27, 17
def ask(frames):
    s = z.zmq_socket(ctx, ZMQ_DEALER)
    t = ctypes.c_int(3000); z.zmq_setsockopt(s, ZMQ_RCVTIMEO, ctypes.byref(t), 4)
    l = ctypes.c_int(0); z.zmq_setsockopt(s, ZMQ_LINGER, ctypes.byref(l), 4)
    for opt, k in ((50, srv), (48, pub), (49, sec)):  # CURVE_SERVERKEY, PUBLICKEY, SECRETKEY
        z.zmq_setsockopt(s, opt, k, 40)
    z.zmq_connect(s, b"tcp://127.0.0.1:%d" % port)
    for i, f in enumerate(frames):
        z.zmq_send(s, f, len(f), ZMQ_SNDMORE if i + 1 < len(frames) else 0)
    buf = ctypes.create_string_buffer(65536)
    n = z.zmq_recv(s, buf, 65536, 0)
    z.zmq_close(s)
    return buf.raw[:max(n, 0)]
answers = 0
cases = [[b"\xff\xff\xff"], [os.urandom(50)], [b"x" * 5000], [b"a", b"b"], [b"\x08\x63"]]
for c in cases:
    r = ask(c)
    answers += (b"bad request" in r) or (b"protocol version" in r)
ok = ask([b"\x08\x01"])  # a good request still works
print("error replies:", answers, "good reply:", b"training" in ok)
PY
check "malformed requests get error replies ($(tail -1 "$tmp/fuzz.out"))" 'grep -q "error replies: 5 good reply: True" "$tmp/fuzz.out"'
check "the coordinator still answers after the garbage" 'js | field "d[\"state\"]" | running'
for f in table prom; do
  opt=$([ $f = prom ] && echo --prom || true)
  "$bin/switchyard" status "$ST" --keys "$tmp/keys" $opt > "$tmp/out.$f" 2>&1 || true
done
check "table output fits 100 columns" '[ "$(awk "{ if (length(\$0) > m) m = length(\$0) } END { print m+0 }" "$tmp/out.table")" -le 100 ] && grep -q "^run " "$tmp/out.table"'
if command -v promtool > /dev/null; then
  check "promtool check metrics accepts the --prom output" 'promtool check metrics < "$tmp/out.prom" > "$tmp/promtool.out" 2>&1 || { cat "$tmp/promtool.out"; false; }'
else
  echo "note: promtool not installed (Debian package prometheus); the grammar is checked by test_status_format"
fi
check "prometheus output has the step and per-expert metrics" 'grep -q "^switchyard_step " "$tmp/out.prom" && grep -q "^switchyard_expert_token_share{" "$tmp/out.prom"'

# kill a worker: it shows as dead, the run recovers on 2
victim=${wpids[1]}
kill -9 "$victim"
seen_dead=0 seen_rec=0
for _ in $(seq 1 100); do
  js > "$tmp/s3.json" 2>/dev/null || continue
  [ "$(field 'len([w for w in d["workers"] if w["state"]=="dead"])' < "$tmp/s3.json" || echo 0)" -ge 1 ] && seen_dead=1
  grep -q '"recovered on 2 workers' "$tmp/s3.json" && seen_rec=1
  [ $seen_dead = 1 ] && [ $seen_rec = 1 ] && break
  sleep 0.1
done
check "the killed worker shows as dead" '[ $seen_dead = 1 ]'
check "the run shows it recovered on 2 workers" '[ $seen_rec = 1 ] && field "d[\"state\"]" < "$tmp/s3.json" | running'
check "a checkpoint is reported" '[ "$(field "d[\"checkpoint_step\"]" < "$tmp/s3.json")" -ge 20 ]'
# CURVE: a client without a key, or with a key not in the status allow-list, reads nothing
r0=0 r3=0
"$bin/switchyard" status "$ST" --timeout 500 > "$tmp/nokey.out" 2> "$tmp/nokey.err" || r0=$?
"$bin/switchyard" keygen "$tmp/stranger" > /dev/null
"$bin/switchyard" status "$ST" --cert "$tmp/stranger.secret" --coordinator-key "$tmp/keys/coordinator.key" \
  --timeout 500 > "$tmp/stranger.out" 2>&1 || r3=$?
check "status without a key: no reply (exit $r0)" '[ $r0 -ne 0 ] && [ ! -s "$tmp/nokey.out" ] && grep -q "give --keys" "$tmp/nokey.err"'
check "status with a key not allowed: no reply (exit $r3)" '[ $r3 -ne 0 ] && ! grep -q "^run " "$tmp/stranger.out"'
check "the coordinator logged the refused status key" 'grep -q "status socket: refused a connection" "$tmp/coord.log"'
# bad endpoints and silence: one line, non-zero exit
r1=0 r2=0
"$bin/switchyard" status "not an endpoint" > /dev/null 2> "$tmp/e1" || r1=$?
"$bin/switchyard" status "tcp://127.0.0.1:$(free_port)" --timeout 300 > /dev/null 2> "$tmp/e2" || r2=$?
check "bad endpoint: exit $r1, one line" '[ $r1 -ne 0 ] && [ "$(wc -l < "$tmp/e1")" -eq 1 ]'
check "no coordinator: exit $r2, one line" '[ $r2 -ne 0 ] && [ "$(wc -l < "$tmp/e2")" -eq 1 ]'
[ $fail -eq 0 ] || { tail -20 "$tmp/coord.log"; cat "$tmp/status.err"; head -c 1500 "$tmp/s1.json"; }
sy_summary
