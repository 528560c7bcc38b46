#!/usr/bin/env bash
# refcheck over every shared PyTorch reference case: loss terms, routing, gradients.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -u
bin=$1 refcases=$2
n=0 fail=0
# no cases is a failure, and must not reach the copy below with an empty path
ls "$refcases"/*/manifest.yaml >/dev/null 2>&1 || { echo "FAIL: no reference cases under $refcases"; exit 1; }
for dir in "$refcases"/*/; do
  [ -f "$dir/manifest.yaml" ] || continue
  n=$((n + 1))
  if "$bin/switchyard" refcheck "$dir" --quiet > /tmp/refcheck.$$.out 2>&1; then
    tail -1 /tmp/refcheck.$$.out
  else
    cat /tmp/refcheck.$$.out; fail=$((fail + 1))
  fi
done
# the same cases through N real worker processes (N = the case's groups)
for dir in "$refcases"/*/; do
  [ -f "$dir/manifest.yaml" ] || continue
  g=$(sed -n 's/^ *groups: *\([0-9]*\).*/\1/p' "$dir/manifest.yaml" | head -1)
  n=$((n + 1))
  if timeout 120 "$bin/switchyard" refcheck "$dir" --workers "$g" --quiet > /tmp/refcheck.$$.out 2>&1; then
    echo "$(tail -1 /tmp/refcheck.$$.out) [$g workers]"
  else
    cat /tmp/refcheck.$$.out; fail=$((fail + 1))
  fi
done
rm -f /tmp/refcheck.$$.out
# a broken case must fail, with the file named
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
first=$(ls -d "$refcases"/*/ | head -1)
cp -r "${first:?}"/. "$tmp/case"; chmod -R u+w "$tmp/case"
python3 - "$tmp/case/layers.0.attn.wo.grad.f32" <<'PY'
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
v = struct.unpack_from('<f', b, 0)[0]; struct.pack_into('<f', b, 0, v * 1.5 + 1.0)
open(p, 'wb').write(b)
PY
if "$bin/switchyard" refcheck "$tmp/case" --quiet > "$tmp/out" 2>&1; then
  echo "FAIL: a case with a corrupted reference gradient passed"; fail=$((fail + 1))
elif ! grep -q 'layers.0.attn.wo .*FAIL' "$tmp/out"; then
  cat "$tmp/out"; echo "FAIL: the corrupted gradient was not named"; fail=$((fail + 1))
fi
rm "$tmp/case/wte.f32"
if "$bin/switchyard" refcheck "$tmp/case" > "$tmp/out" 2>&1 || ! grep -q 'wte.f32' "$tmp/out"; then
  cat "$tmp/out"; echo "FAIL: a missing tensor file was not reported by name"; fail=$((fail + 1))
fi
[ "$n" -gt 0 ] || { echo "FAIL: no reference cases under $refcases"; exit 1; }
echo "$((n + 2 - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
