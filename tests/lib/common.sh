# tests/lib/common.sh: what every shell test needs, sourced right after its
# `set -euo pipefail` (this folder is not globbed as tests by tests/CMakeLists.txt).
#   sy_args "$@"         sets bin, refcases, src from BIN_DIR REFCASES_DIR SOURCE_DIR
#   sy_tmpdir            makes $tmp (checked) and installs the EXIT trap
#   sy_track PID         a process this test started: killed (with its descendants)
#                        at exit, by PID, never by name
#   sy_at_exit CMD       CMD is evaluated at exit, after those processes are killed and
#                        before $tmp is removed (unmount, delete a namespace, ...)
#   check WHAT CMD       evaluates CMD; counts a pass (ok: WHAT) or a failure (FAIL: WHAT)
#   sy_summary           prints the counts; returns non-zero when anything failed
#   free_port            a free TCP port on 127.0.0.1
#   wait_for RE FILE S   waits up to S seconds for a line of FILE to match the extended
#                        regular expression RE; returns 1 when none did
#   sy_prepare [FILES]   `switchyard prepare` of FILES (default: the C sources and headers
#                        of $src/common, in a fixed order) into $tmp/data, one document a
#                        file, 20% for validation; on failure prints why and exits
# KEEP=1 keeps $tmp for a post-mortem (processes are still killed).

sy_args() {
  bin=${1:?usage: $0 BIN_DIR REFCASES_DIR SOURCE_DIR}
  refcases=${2:?usage: $0 BIN_DIR REFCASES_DIR SOURCE_DIR}
  src=${3:?usage: $0 BIN_DIR REFCASES_DIR SOURCE_DIR}
}

sy_pids=()
sy_track() { sy_pids+=("$1"); }
sy_exit_cmds=()
sy_at_exit() { sy_exit_cmds+=("$1"); }

# kills PID and every process below it (children first listed, then PID itself)
sy_kill_tree() {
  local p=$1 c
  for c in $(pgrep -P "$p" 2>/dev/null || true); do sy_kill_tree "$c"; done
  kill -9 "$p" 2>/dev/null || true
  kill -CONT "$p" 2>/dev/null || true
}

sy_cleanup() {
  local rc=$? p c
  disown -a 2>/dev/null || true  # no "Killed" job notices for what is killed below
  for p in "${sy_pids[@]}"; do sy_kill_tree "$p"; done
  for c in "${sy_exit_cmds[@]}"; do eval "$c" || true; done
  if [ -n "${tmp:-}" ] && [ -d "$tmp" ]; then
    if [ -n "${KEEP:-}" ]; then echo "kept $tmp"; else rm -rf -- "${tmp:?}"; fi
  fi
  exit "$rc"
}

sy_tmpdir() {
  tmp=$(mktemp -d) || { echo "FAIL: mktemp -d failed"; exit 1; }
  [ -n "$tmp" ] && [ -d "$tmp" ] || { echo "FAIL: mktemp -d gave no directory"; exit 1; }
  # workers make their local socket directories here (wire.local), so one killed with
  # SIGKILL leaves nothing behind in /tmp
  export XDG_RUNTIME_DIR=$tmp
  trap sy_cleanup EXIT
  trap 'exit 130' INT TERM
}

fail=0 pass=0
check() { if eval "$2"; then pass=$((pass + 1)); echo "ok: $1"; else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
sy_summary() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {
  local i
  for i in $(seq 1 $(($3 * 10))); do grep -qE "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done; return 1
}

sy_prepare() {
  [ $# -gt 0 ] || set -- $(find "$src/common" -name "*.[ch]" | LC_ALL=C sort)
  "$bin/switchyard" prepare --out "$tmp/data" --val-fraction 0.2 --split file "$@" > "$tmp/prep.out" 2>&1 ||
    { cat "$tmp/prep.out"; echo "FAIL: prepare"; exit 1; }
}

# sy_word_corpus DIR: 20 text files of pseudo-random words (a fixed LCG), the same on
# every machine and whatever the source tree holds: for tests whose figures depend on the
# data (summation-order drift after several AdamW steps).
sy_word_corpus() {
  local dir=$1 words x f line _
  words=(the a switch expert router token gate capacity layer worker ring mesh step loss
         bytes group batch 0 1 2 3 4 5 6 7 8 9 "{" "}" ";" "=" "+" "(" ")" int float return)
  mkdir -p "$dir"
  x=12345
  for f in $(seq -w 1 20); do
    line=""
    for _ in $(seq 1 1500); do
      x=$(( (x * 1103515245 + 12345) % 2147483648 ))
      line+="${words[$(( (x >> 16) % ${#words[@]} ))]} "
      [ $(( (x >> 8) % 11 )) -eq 0 ] && line+=$'\n'
    done
    printf '%s\n' "$line" > "$dir/doc$f.txt"
  done
}
