# tests/lib/netns.sh: machines in network namespaces, for tests/netns.sh and
# bench/overlap.sh; sourced (after `set -euo pipefail`), not run. Needs root and iproute2.
# Builds on tests/lib/common.sh (sourced here): start processes with sy_track.
#   netns_init PREFIX    makes $tmp and its trap (sy_tmpdir), a per-run $tag (PREFIX and
#                        6 hex digits) and $net (10.A.B, drawn per run); at exit, after
#                        the tracked processes are killed, every namespace made is deleted
#   ns NAME              the namespace of node NAME ($tag-NAME)
#   netns_make NODE...   namespace $tag-br holding the bridge br0, and one namespace a
#                        NODE, joined to the bridge by a veth pair; the i-th NODE's eth0
#                        is $net.i/24. Returns 1, the reason in $netns_err, when this
#                        machine cannot make namespaces, bridges or veth pairs (a test
#                        skips); any later failure ends the script.
#   netns_rate NODE RATE|none BURST LATENCY
#                        a tc tbf rate limit on NODE's eth0 (egress), replacing any;
#                        `none` only removes it
# Nothing is added to the host's own network stack.

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

netns_made=()
netns_delete() {
  local n
  for n in "${netns_made[@]}"; do ip netns del "$n" 2> /dev/null || true; done
}

netns_init() {
  sy_tmpdir
  tag=$(printf '%s%06x' "$1" $(((($$ << 15) ^ RANDOM ^ (RANDOM << 8)) & 0xffffff)))
  net="10.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))"
  sy_at_exit netns_delete
}

ns() { echo "$tag-$1"; }

netns_make() {
  local n i=0
  ip netns add "$(ns br)" 2> "$tmp/netns.err" ||
    { netns_err="cannot create a network namespace: $(cat "$tmp/netns.err")"; return 1; }
  netns_made+=("$(ns br)")
  ip -n "$(ns br)" link add br0 type bridge 2> "$tmp/netns.err" ||
    { netns_err="cannot create a bridge: $(cat "$tmp/netns.err")"; return 1; }
  { ip -n "$(ns br)" link set br0 up && ip -n "$(ns br)" link set lo up; } ||
    { echo "FAIL: netns: bringing up the bridge"; exit 1; }
  for n in "$@"; do
    i=$((i + 1))
    ip netns add "$(ns "$n")" || { echo "FAIL: netns: ip netns add $(ns "$n")"; exit 1; }
    netns_made+=("$(ns "$n")")
    ip -n "$(ns br)" link add "p-$n" type veth peer name eth0 netns "$(ns "$n")" 2> "$tmp/netns.err" ||
      { netns_err="cannot create a veth pair: $(cat "$tmp/netns.err")"; return 1; }
    { ip -n "$(ns br)" link set "p-$n" master br0 up &&
      ip -n "$(ns "$n")" link set lo up &&
      ip -n "$(ns "$n")" addr add "$net.$i/24" dev eth0 &&
      ip -n "$(ns "$n")" link set eth0 up; } || { echo "FAIL: netns: the link of node $n"; exit 1; }
  done
}

netns_rate() {
  tc -n "$(ns "$1")" qdisc del dev eth0 root 2> /dev/null || true
  [ "$2" = none ] || tc -n "$(ns "$1")" qdisc add dev eth0 root tbf rate "$2" burst "$3" latency "$4"
}
