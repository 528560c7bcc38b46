#!/usr/bin/env bash
# Drill (issue 15): workers on one machine reach each other over ipc sockets in private
# directories (wire.local), not CURVE over loopback TCP, whose encryption took a fifth of
# the 2 cores. What must hold:
#  - two CURVE workers on this machine say they use local sockets, each in a directory
#    of mode 0700 (in a per-user parent, 0700 too) holding its two data sockets (main and
#    overlap thread);
#  - the same user reaches such a socket (a junk message there is seen and dropped);
#    another user (as root: nobody, via setpriv) cannot, under a /tmp-like base; the
#    same attempt once the directories are opened gets in (the check can fail);
#  - the directories are gone when the workers exit (the per-user parent stays);
#  - the trained state is the same, bit for bit, as with wire.local=false (TCP + CURVE).
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$3
. "$src/tests/lib/drill.sh"
sy_prepare
drill_job "$tmp/long.yaml" 1000000
drill_job "$tmp/job.yaml" 40
# a /tmp-like parent: anyone may enter it and make things there
chmod 711 "$tmp"
export XDG_RUNTIME_DIR=$tmp/xdg
mkdir -m 1777 "$XDG_RUNTIME_DIR"

# L: the defaults (local sockets on), CURVE as in production, running until stopped
coord l "$tmp/long.yaml" 2 --start-workers 2
lpid=$cpid
worker l.w1.log
w1=$wpid
worker l.w2.log
w2=$wpid
check "both workers say their peer is on this machine and reached over local sockets" \
  'wait_for "on this machine: data to it goes over local sockets" "$tmp/l.w1.log" 60 &&
   wait_for "on this machine: data to it goes over local sockets" "$tmp/l.w2.log" 60'
parent=$XDG_RUNTIME_DIR/switchyard-$(id -u)
mapfile -t dirs < <(find "$parent" -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort)
check "two private directories (${#dirs[@]}) in a private parent, mode 700, owned by this user, each with its two sockets" \
  '[ ${#dirs[@]} -eq 2 ] && for d in "$parent" "${dirs[@]}"; do
     [ "$(stat -c %a:%u "$d")" = "700:$(id -u)" ] || exit 1
   done && for d in "${dirs[@]}"; do [ -S "$d/data" ] && [ -S "$d/overlap" ] || exit 1; done'
# the same user gets in: a message of another epoch arrives and is dropped (and logged)
"$bin/sy-attack" junk-a2a --data "ipc://${dirs[0]}/data" --epoch 1 --step 0 --count 1 > "$tmp/attack.same" 2>&1 || true
check "the same user's message reaches a local socket (and is dropped: another epoch)" \
  'wait_for "dropped a message from rank [0-9]* of epoch 1 " "$tmp/l.w1.log" 10 ||
   wait_for "dropped a message from rank [0-9]* of epoch 1 " "$tmp/l.w2.log" 10'
if [ "$(id -u)" -eq 0 ] && command -v setpriv > /dev/null; then
  before=$(cat "$tmp"/l.w*.log | grep -c "of epoch 2 " || true)
  setpriv --reuid=65534 --regid=65534 --clear-groups -- "$bin/sy-attack" junk-a2a --data "ipc://${dirs[1]}/data" \
    --epoch 2 --step 0 --count 1 > "$tmp/attack.other" 2>&1 || true
  sleep 2
  after=$(cat "$tmp"/l.w*.log | grep -c "of epoch 2 " || true)
  check "another user (nobody) cannot reach it ($before -> $after messages seen, the workers still running)" \
    '[ "$after" -eq "$before" ] && kill -0 "$w1" 2> /dev/null && kill -0 "$w2" 2> /dev/null'
  # the control: the same attempt once the directories and the socket are open gets in
  chmod 755 "$parent" "${dirs[1]}"
  chmod 777 "${dirs[1]}/data"
  setpriv --reuid=65534 --regid=65534 --clear-groups -- "$bin/sy-attack" junk-a2a --data "ipc://${dirs[1]}/data" \
    --epoch 2 --step 0 --count 1 > "$tmp/attack.open" 2>&1 || true
  check "... while the same attempt at an opened directory does get in (the check can fail)" \
    'wait_for "dropped a message from rank [0-9]* of epoch 2 " "$tmp/l.w1.log" 10 ||
     wait_for "dropped a message from rank [0-9]* of epoch 2 " "$tmp/l.w2.log" 10'
  chmod 700 "$parent" "${dirs[1]}"
else
  skip "another user's attempt needs root and setpriv"
fi
kill -TERM "$lpid"
wait_exit "$lpid" 60 || true
wait_exit "$w1" 60 || true
wait_exit "$w2" 60 || true
check "the workers removed their directories when they exited" \
  '[ -z "$(find "$parent" -mindepth 1 -maxdepth 1 -print -quit)" ]'

# A and B: the same 40 steps over local sockets and over loopback TCP with CURVE
coord a "$tmp/job.yaml" 2 --start-workers 2
worker a.w1.log
worker a.w2.log
wait_exit "$cpid" 240 || true
check "run A (defaults) finishes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/a/step-00000040" ]'
check "... and its workers use local sockets" 'grep -q "over local sockets" "$tmp/a.w1.log"'
coord b "$tmp/job.yaml" 2 --start-workers 2 --set wire.local=false
worker b.w1.log
worker b.w2.log
wait_exit "$cpid" 240 || true
check "run B (wire.local=false) finishes (rc $rc)" '[ "$rc" -eq 0 ] && [ -d "$tmp/b/step-00000040" ]'
check "... and its workers do not use local sockets" '! grep -q "over local sockets" "$tmp"/b.w*.log'
check "local sockets and TCP + CURVE train the same bits" \
  '"$bin/switchyard" ckpt diff "$tmp/a/step-00000040" "$tmp/b/step-00000040" --tol 0 > "$tmp/diff" 2>&1 ||
   { cat "$tmp/diff"; false; }'
drill_end
