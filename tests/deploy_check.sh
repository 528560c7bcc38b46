#!/usr/bin/env bash
# The deploy/ recipes, checked offline on this machine:
#   - the Slurm batch script: bash -n and shellcheck (it also runs through a real Slurm
#     in tests/deploy_slurm.sh);
#   - the systemd units: `systemd-analyze verify` with no complaint at all, then the
#     units' own ExecStart lines (their Environment= defaults, %i = a free data port) run
#     for real: a coordinator and two workers train a short job to the end;
#   - the Kubernetes manifests: tests/deploy/k8s_check.py (structure, selectors, ports,
#     volumes, every flag known to the binary), `kubectl kustomize` when kubectl is
#     there, and the coordinator's liveness command run against a live coordinator;
#   - `switchyard status --prom --listen` (the metrics sidecar): GET /metrics gives the
#     Prometheus text, other paths and methods a 404/405, a dead coordinator a 503 with
#     the reason, SIGTERM a clean exit;
#   - the Dockerfile: every package it installs exists in Debian, the runtime stage has
#     the packages of every shared library the binaries load, the build stage's list is
#     scripts/setup.sh's, every COPY source exists.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
sy_args "$@"
sy_tmpdir   # KEEP=1 keeps $tmp
need() { command -v "$1" > /dev/null || { echo "FAIL: no '$1' (Debian package $2; scripts/setup.sh installs it)"; fail=$((fail + 1)); return 1; }; }
# a worker's data port P and P+1 (the overlap thread's socket) both free
free_port_pair() { /usr/bin/python3 -c '
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
'; }
wait_exit() { # wait_exit PID SECONDS: sets rc to its exit code, or 124 (killed) after SECONDS
  local k st=""
  for k in $(seq 1 $(($2 * 10))); do
    st=$(ps -o stat= -p "$1" 2> /dev/null || true)
    [ -z "$st" ] || [ "${st:0:1}" = Z ] && break
    sleep 0.1
  done
  rc=0
  if [ -n "$st" ] && [ "${st:0:1}" != Z ]; then kill -9 "$1"; wait "$1" 2> /dev/null || true; rc=124; return; fi
  wait "$1" || rc=$?
}

sy_prepare
cat > "$tmp/job.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {steps: 40, batch_size: 6, seq_len: 16, lr: 0.01, warmup_steps: 2, log_every: 10, eval_batches: 1, threads: 1}
checkpoint: {every: 20, keep: 3}
cluster: {heartbeat_ms: 200, timeout_ms: 1500, balance_by_speed: false}
YAML

# --- Slurm script
sb=$src/deploy/slurm/switchyard.sbatch
check "switchyard.sbatch parses (bash -n)" 'bash -n "$sb"'
if need shellcheck shellcheck; then
  check "switchyard.sbatch is shellcheck-clean" 'shellcheck "$sb" > "$tmp/shellcheck.out" 2>&1 || { cat "$tmp/shellcheck.out"; false; }'
fi

# --- systemd units
units=("$src/deploy/systemd/switchyard-coordinator.service" "$src/deploy/systemd/switchyard-worker@.service")
if need systemd-analyze systemd; then
  mkdir -p "$tmp/units"
  # the units name /usr/local/bin; verify checks the binaries exist, so point it at the build
  for u in "${units[@]}"; do sed "s|/usr/local/bin/|$bin/|g" "$u" > "$tmp/units/$(basename "$u")"; done
  cp "$tmp/units/switchyard-worker@.service" "$tmp/units/switchyard-worker@7000.service"
  check "systemd-analyze verify: both units, no complaint" \
    '(cd "$tmp/units" && systemd-analyze verify ./switchyard-coordinator.service ./switchyard-worker@7000.service) > "$tmp/verify.out" 2>&1 && [ ! -s "$tmp/verify.out" ] || { cat "$tmp/verify.out"; false; }'
  check "systemd-analyze verify catches a mistake (a misspelt key)" \
    'sed "s/^Restart=on-failure/Restart=sometimes/" "$tmp/units/switchyard-coordinator.service" > "$tmp/units/bad.service" && (cd "$tmp/units" && systemd-analyze verify ./bad.service) > "$tmp/verify.bad" 2>&1; [ -s "$tmp/verify.bad" ]'
  for u in "${units[@]}"; do
    check "$(basename "$u"): Restart=on-failure, User=switchyard, hardening" \
      'grep -q "^Restart=on-failure" "$u" && grep -q "^User=switchyard" "$u" && grep -q "^NoNewPrivileges=yes" "$u" && grep -q "^ProtectSystem=strict" "$u"'
  done
fi
# ExecStart lines as systemd would run them: Environment= defaults, then the test's values
# (free ports, the test's data and config), %i = the instance
execstart() { # execstart UNIT INSTANCE KEY=VALUE...: the argv, one word per line
  /usr/bin/python3 - "$@" <<'PY'
import re, shlex, sys
unit, inst, over = sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
text = open(unit).read().replace("\\\n", " ")
env = {}
for line in text.splitlines():
    if line.startswith("Environment="):
        for w in shlex.split(line[len("Environment="):]):
            k, v = w.split("=", 1)
            env[k] = v
env.update(over)
cmd = next(l[len("ExecStart="):] for l in text.splitlines() if l.startswith("ExecStart="))
words = shlex.split(cmd.replace("%i", inst))
out = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w) for w in words]
out[0] = out[0].replace("/usr/local/bin/", over["BIN"] + "/")
print("\n".join(out))
PY
}
# CURVE keys as the units' comments lay them out: the coordinator's keygen --cluster
# directory, and a worker machine's directory with worker.secret and coordinator.key
"$bin/switchyard" keygen --cluster "$tmp/ukeys" --workers 2 > /dev/null
for k in 0 1; do
  mkdir -m 700 "$tmp/ukeys-w$k"
  cp -p "$tmp/ukeys/workers/worker-$k.secret" "$tmp/ukeys-w$k/worker.secret"
  cp -p "$tmp/ukeys/coordinator.key" "$tmp/ukeys-w$k/coordinator.key"
done
cport=$(free_port) sport=$(free_port)
mapfile -t cargv < <(execstart "${units[0]}" "" BIN="$bin" SWITCHYARD_CONFIG="$tmp/job.yaml" \
  SWITCHYARD_BIND="tcp://127.0.0.1:$cport" SWITCHYARD_STATUS="tcp://127.0.0.1:$sport" SWITCHYARD_DATA="$tmp/data" \
  SWITCHYARD_KEYS="$tmp/ukeys")
# the unit's checkpoint.dir is /var/lib/switchyard/runs (its StateDirectory): the last --set wins
"${cargv[@]}" --set checkpoint.dir="$tmp/unit-run" > "$tmp/unit-coord.log" 2>&1 &
ucoord=$!
sy_track "$ucoord"
for k in 1 2; do
  mapfile -t wargv < <(execstart "${units[1]}" "$(free_port_pair)" BIN="$bin" SWITCHYARD_COORDINATOR="tcp://127.0.0.1:$cport" \
    SWITCHYARD_WORKER_THREADS=1 SWITCHYARD_KEYS="$tmp/ukeys-w$((k - 1))")
  "${wargv[@]}" > "$tmp/unit-w$k.log" 2>&1 &
  sy_track "$!"
done
wait_exit "$ucoord" 120
check "the units' ExecStart lines train a run to the end (rc $rc)" \
  '[ "$rc" = 0 ] && "$bin/switchyard" ckpt verify "$tmp/unit-run/step-00000040" > /dev/null 2>&1 || { for f in "$tmp"/unit-*.log; do tail -n 5 "$f"; done; false; }'
check "the worker unit pins its data port to the instance name" \
  'grep -q "data endpoint tcp://127.0.0.1:${wargv[4]}" "$tmp/unit-w2.log"'
check "the units run with CURVE on (keys from SWITCHYARD_KEYS)" \
  '! grep -q "NO CURVE" "$tmp/unit-coord.log" && [[ " ${cargv[*]} " == *" --keys $tmp/ukeys "* ]] && [[ " ${wargv[*]} " == *" --cert $tmp/ukeys-w1/worker.secret "* ]]'

# --- Kubernetes manifests
k8s=$src/deploy/k8s
check "k8s manifests: structure, selectors, ports, volumes, flags (k8s_check.py)" \
  '/usr/bin/python3 "$src/tests/deploy/k8s_check.py" "$k8s" "$bin"'
if command -v kubectl > /dev/null; then
  check "kubectl kustomize renders the set offline" \
    'kubectl kustomize "$k8s" > "$tmp/kust.yaml" 2> "$tmp/kust.err" && [ "$(grep -c "^kind:" "$tmp/kust.yaml")" -ge 6 ] || { cat "$tmp/kust.err"; false; }'
else
  echo "note: no kubectl here; the manifests are checked by k8s_check.py only"
fi

# --- a live coordinator (no workers: it waits) for the liveness probe and the exporter,
# with CURVE keys laid out as the pods see them: the Secret's files made by the commands
# of secret.yaml (in $tmp/k8s-etc, for /etc/switchyard/keys) and the init container's
# copies (in $tmp/k8s-run, for /run/switchyard/keys)
"$bin/switchyard" keygen --cluster "$tmp/k8skeys" --workers 1 > /dev/null
mkdir -m 700 "$tmp/k8s-etc" "$tmp/k8s-run"
cat "$tmp/k8skeys"/workers/*.key > "$tmp/k8s-etc/workers.keys"
cat "$tmp/k8skeys"/clients/*.key > "$tmp/k8s-etc/clients.keys"
cp "$tmp/k8skeys/coordinator.key" "$tmp/k8s-etc/coordinator.key"
install -m 600 "$tmp/k8skeys/coordinator.secret" "$tmp/k8skeys/clients/operator.secret" "$tmp/k8s-run/"
k8spaths() { sed -e "s|/etc/switchyard/keys/|$tmp/k8s-etc/|" -e "s|/run/switchyard/keys/|$tmp/k8s-run/|"; }
mapfile -t ckargs < <(/usr/bin/python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "StatefulSet":
        a = d["spec"]["template"]["spec"]["containers"][0]["args"]
        for i, w in enumerate(a):
            if w in ("--cert", "--allow", "--status-allow", "--keys"):
                print(w); print(a[i + 1])
' "$src/deploy/k8s/coordinator.yaml" | k8spaths)
check "the coordinator manifest passes CURVE keys (${ckargs[*]:-none})" '[ ${#ckargs[@]} -ge 4 ]'
cport=$(free_port) sport=$(free_port) hport=$(free_port)
"$bin/switchyard-coordinator" "$tmp/job.yaml" --bind "tcp://127.0.0.1:$cport" --status "tcp://127.0.0.1:$sport" \
  "${ckargs[@]}" --set data.dir="$tmp/data" --set checkpoint.dir="$tmp/live" > "$tmp/live.log" 2>&1 &
lcoord=$!
sy_track "$lcoord"
mapfile -t probe < <(/usr/bin/python3 "$src/tests/deploy/k8s_check.py" "$k8s" "$bin" --print-probe | k8spaths)
probe[0]=$bin/${probe[0]}
probe=("${probe[@]//127.0.0.1:5556/127.0.0.1:$sport}")
ok=1
for _ in $(seq 1 50); do "${probe[@]}" > /dev/null 2>&1 && { ok=0; break; }; sleep 0.1; done
check "the manifest's liveness command passes against a live coordinator" '[ $ok = 0 ]'
check "without the operator key the status socket does not answer" \
  '! "$bin/switchyard" status "tcp://127.0.0.1:$sport" --timeout 1000 > /dev/null 2>&1'

# the metrics sidecar's key flags, as coordinator.yaml gives them
mapfile -t skargs < <(/usr/bin/python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "StatefulSet":
        c = [c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "metrics"][0]["command"]
        for i, w in enumerate(c):
            if w in ("--cert", "--coordinator-key", "--keys"):
                print(w); print(c[i + 1])
' "$src/deploy/k8s/coordinator.yaml" | k8spaths)
"$bin/switchyard" status "tcp://127.0.0.1:$sport" --prom --listen "127.0.0.1:$hport" "${skargs[@]}" > "$tmp/exporter.out" 2> "$tmp/exporter.err" &
exporter=$!
sy_track "$exporter"
http() { # http METHOD PATH: prints "CODE" then the body
  /usr/bin/python3 - "$hport" "$1" "$2" <<'PY'
import http.client, sys, time
for _ in range(50):
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
        c.request(sys.argv[2], sys.argv[3])
        r = c.getresponse()
        print(r.status); print(r.getheader("Content-Type")); print(r.read().decode())
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
PY
}
http GET /metrics > "$tmp/m200"
check "GET /metrics: 200, Prometheus text with switchyard_ metrics" \
  '[ "$(head -1 "$tmp/m200")" = 200 ] && sed -n 2p "$tmp/m200" | grep -q "^text/plain; version=0.0.4" && grep -q "^switchyard_" "$tmp/m200"'
http GET /nope > "$tmp/m404"
http POST /metrics > "$tmp/m405"
check "other paths get 404, other methods 405" '[ "$(head -1 "$tmp/m404")" = 404 ] && [ "$(head -1 "$tmp/m405")" = 405 ]'
kill -9 "$lcoord"
wait "$lcoord" 2> /dev/null || true
http GET /metrics > "$tmp/m503"
check "a coordinator that does not answer: 503 with the reason" \
  '[ "$(head -1 "$tmp/m503")" = 503 ] && grep -q "no reply from tcp://127.0.0.1:$sport" "$tmp/m503"'
check "the liveness command fails when the coordinator is gone" '! "${probe[@]}" > /dev/null 2>&1'
kill -TERM "$exporter"
wait_exit "$exporter" 10
check "the exporter stops cleanly on SIGTERM (rc $rc)" '[ "$rc" = 0 ]'
check "--listen without --prom is refused" \
  '! "$bin/switchyard" status 127.0.0.1:1 --listen 127.0.0.1:0 2> "$tmp/l.err" && grep -q "use it with --prom" "$tmp/l.err"'

# --- Dockerfile
df=$src/deploy/docker/Dockerfile
/usr/bin/python3 - "$df" "$src/scripts/setup.sh" > "$tmp/pkgs" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stages = re.split(r"^FROM ", text, flags=re.M)[1:]
for i, st in enumerate(stages):
    if not st.startswith("debian:12"):
        print(f"bad stage base: FROM {st.split()[0]}")
    pk = []
    for m in re.finditer(r"apt-get install ([^&]*)", st):
        pk += [w for w in m.group(1).split() if not w.startswith("-")]
    print(f"stage{i} " + " ".join(pk))
setup = open(sys.argv[2]).read()
lst = re.search(r"PACKAGES=\(([^)]*)\)", setup).group(1)
print("setup " + " ".join(w for w in re.sub(r"#.*", "", lst).split()))
for m in re.finditer(r"^COPY (?!--from)(\S+)", text, flags=re.M):
    print("copy " + m.group(1))
PY
check "every stage is FROM debian:12" '! grep -q "^bad stage" "$tmp/pkgs"'
build_pk=$(grep '^stage0 ' "$tmp/pkgs" | cut -d' ' -f2-)
run_pk=$(grep '^stage1 ' "$tmp/pkgs" | cut -d' ' -f2-)
setup_pk=" $(grep '^setup ' "$tmp/pkgs" | cut -d' ' -f2-) "
# one apt-cache call for all (each call reads the whole package cache)
# shellcheck disable=SC2086
apt-cache policy $build_pk $run_pk > "$tmp/policy" 2> /dev/null || true
missing=""
for p in $build_pk $run_pk; do
  awk -v p="$p:" '$0 == p { f = 1; next } /^[^ ]/ { f = 0 } f && $1 == "Candidate:" && $2 != "(none)" { ok = 1 } END { exit !ok }' \
    "$tmp/policy" || missing+=" $p"
done
check "every package the Dockerfile installs is a Debian package (missing:${missing:- none})" '[ -z "$missing" ]'
notinsetup=""
for p in $build_pk; do [[ "$setup_pk" == *" $p "* ]] || notinsetup+=" $p"; done
check "the build stage installs scripts/setup.sh's packages (extra:${notinsetup:- none})" '[ -z "$notinsetup" ]'
# and every library the build needs (setup.sh's -dev packages) is in the build stage
devmissing=""
for p in $setup_pk; do [[ "$p" == *-dev ]] && [[ " $build_pk " != *" $p "* ]] && devmissing+=" $p"; done
check "the build stage has every -dev package of scripts/setup.sh (missing:${devmissing:- none})" '[ -z "$devmissing" ]'
# packages of the shared libraries the binaries load, less what debian:12 already has
# (Priority required/important, e.g. libc6)
need_pk=$(for b in switchyard switchyard-coordinator switchyard-worker; do ldd "$bin/$b"; done | awk '/=> \//{print $3}' | sort -u |
  while read -r l; do dpkg -S "$(readlink -f "$l")" 2> /dev/null | head -1 | cut -d: -f1; done | sort -u)
# shellcheck disable=SC2086
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances $run_pk > "$tmp/deps" 2> /dev/null || true
uncovered=""
for p in $need_pk; do
  prio=$(dpkg-query -W -f='${Priority}' "$p" 2> /dev/null || true)
  [ "$prio" = required ] || [ "$prio" = important ] && continue
  [[ " $run_pk " == *" $p "* ]] && continue
  # a dependency of a listed package is pulled in by apt
  grep -qx "  Depends: $p" "$tmp/deps" || uncovered+=" $p"
done
check "the runtime stage brings every shared library the binaries load (uncovered:${uncovered:- none})" '[ -z "$uncovered" ]'
nocopy=""
while read -r c; do [ -e "$src/$c" ] || nocopy+=" $c"; done < <(grep '^copy ' "$tmp/pkgs" | cut -d' ' -f2)
check "every COPY source exists in the repository (missing:${nocopy:- none})" '[ -z "$nocopy" ]'

sy_summary
