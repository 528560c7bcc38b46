#!/usr/bin/env bash
# The maths library and its tests link no runtime library: no ZeroMQ, protobuf-c or
# YAML on their link line, in their binaries' NEEDED entries, or among the symbols
# libsy_math.a leaves undefined. A network test must show ZeroMQ, so the check can fail.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1
build=$(cd "$bin/.." && pwd)
runtime='zmq|protobuf|cyaml|yaml|jansson|sy_net|sy_store|sy_proto|sy_plot'
fail=0
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
for t in test_bf16 test_blas_setup test_gradcheck test_optim test_router; do
  link="$build/tests/CMakeFiles/$t.dir/link.txt"
  [ -f "$link" ] && [ -x "$bin/$t" ] || { echo "FAIL: $t not built ($link)"; fail=1; continue; }
  if grep -Eo "[^ ]*($runtime)[^ ]*" "$link"; then
    echo "FAIL: $t: runtime libraries on the link line (above)"; fail=1
  fi
  if needed "$bin/$t" | grep -E "$runtime"; then
    echo "FAIL: $t: needs runtime libraries (above)"; fail=1
  fi
  grep -q 'libsy_math\.a.*openblas' "$link" || { echo "FAIL: $t: sy_math and OpenBLAS not on its link line"; fail=1; }
done
lib="$build/lib/libsy_math.a"
[ -f "$lib" ] || { echo "FAIL: no $lib"; exit 1; }
if nm -u "$lib" | grep -E ' (zmq_|protobuf_c_|cyaml_|yaml_|json_)'; then
  echo "FAIL: libsy_math.a calls into runtime libraries (above)"; fail=1
fi
# the control: a network test does need ZeroMQ, and the checks above would have seen it
grep -Eq "libzmq" "$build/tests/CMakeFiles/test_peer.dir/link.txt" || { echo "FAIL: the check cannot see libzmq on test_peer's link line"; fail=1; }
needed "$bin/test_peer" | grep -q zmq || { echo "FAIL: the check cannot see libzmq in test_peer"; fail=1; }
[ "$fail" -eq 0 ] && echo "test_router needs only: $(needed "$bin/test_router" | tr '\n' ' ')"
exit "$fail"
