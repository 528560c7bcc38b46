#!/usr/bin/env bash
# refcheck over every PyTorch reference case of the project (tests/refcases, made by
# tests/oracle/refgen.py): loss terms, routing and gradients, in one process and through
# as many real worker processes as the case has groups. Then the checks must bite: a
# gradient off by 1e-4 relative, a loss term off by 1e-5 relative, a changed routing
# choice, a missing tensor and a missing case directory all fail, by name.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=${1:?usage: refcheck.sh BIN_DIR REFCASES_DIR SOURCE_DIR}
refcases=${2:?usage: refcheck.sh BIN_DIR REFCASES_DIR SOURCE_DIR}
self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
py=$(command -v /usr/bin/python3 || command -v python3) || { echo "FAIL: python3 is needed"; exit 1; }

# Find the cases before making or copying anything: a missing folder is an error here.
cases=()
if [ -d "$refcases" ]; then
  for dir in "$refcases"/*/; do
    [ -f "${dir}manifest.yaml" ] && cases+=("${dir%/}")
  done
fi
if [ ${#cases[@]} -eq 0 ]; then
  echo "FAIL: no reference cases (directories with manifest.yaml) under '$refcases';" \
       "they are committed in tests/refcases/ (remake them: /usr/bin/python3 tests/oracle/refgen.py write tests/refcases)" >&2
  exit 1
fi

tmp=$(mktemp -d) || exit 1
[ -n "$tmp" ] && [ -d "$tmp" ] || { echo "FAIL: mktemp gave no directory"; exit 1; }
trap 'rm -rf -- "${tmp:?}"' EXIT

n=0 fail=0
pass() { n=$((n + 1)); echo "ok: $*"; }
bad() { n=$((n + 1)); fail=$((fail + 1)); echo "FAIL: $*"; }

for dir in "${cases[@]}"; do
  if "$bin/switchyard" refcheck "$dir" --quiet > "$tmp/out" 2>&1; then
    pass "$(tail -1 "$tmp/out") [$(grep '^worst gradient' "$tmp/out")]"
  else
    cat "$tmp/out"; bad "refcheck $dir"
  fi
done
# the same cases through N real worker processes (N = the case's groups)
for dir in "${cases[@]}"; do
  g=$(sed -n 's/^ *groups: *\([0-9]*\).*/\1/p' "$dir/manifest.yaml" | head -1)
  if timeout 120 "$bin/switchyard" refcheck "$dir" --workers "$g" --quiet > "$tmp/out" 2>&1; then
    pass "$(tail -1 "$tmp/out") [$g workers]"
  else
    cat "$tmp/out"; bad "refcheck $dir --workers $g"
  fi
done

# A writable copy of one case (plain files: no recursive copy of a computed path).
fresh_copy() {
  rm -rf -- "${tmp:?}/case"
  mkdir "$tmp/case"
  cp -- "${cases[0]:?}"/* "$tmp/case/"
  chmod u+w "$tmp/case"/*
}
# scale(FILE, FACTOR, INDEX): multiplies one float32 (INDEX >= 0) or all of them (-1)
scale() {
  "$py" - "$@" <<'PY'
import struct, sys
path, factor, index = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
b = bytearray(open(path, 'rb').read())
for i in range(len(b) // 4) if index < 0 else [index]:
    struct.pack_into('<f', b, 4 * i, struct.unpack_from('<f', b, 4 * i)[0] * factor)
open(path, 'wb').write(b)
PY
}
expect_fail() { # what, grep pattern the output must hold
  local what=$1 pattern=$2
  if "$bin/switchyard" refcheck "$tmp/case" --quiet > "$tmp/out" 2>&1; then
    cat "$tmp/out"; bad "$what: refcheck passed"
  elif ! grep -q -- "$pattern" "$tmp/out"; then
    cat "$tmp/out"; bad "$what: the output does not say '$pattern'"
  else
    pass "$what: refcheck fails ($(grep -m1 -- "$pattern" "$tmp/out" | tr -s ' '))"
  fi
}

fresh_copy
"$bin/switchyard" refcheck "$tmp/case" --quiet > "$tmp/out" 2>&1 || { cat "$tmp/out"; bad "the unmodified copy fails"; }

# every element of one reference gradient 1e-4 relative larger: 10x the tolerance
fresh_copy
scale "$tmp/case/layers.0.attn.wo.grad.f32" 1.0001 -1
expect_fail "gradient of layers.0.attn.wo scaled by 1+1e-4" 'layers.0.attn.wo .*FAIL'
fresh_copy
scale "$tmp/case/lm_head.grad.f32" 0.9999 -1
expect_fail "gradient of lm_head scaled by 1-1e-4" 'lm_head .*FAIL'
# one element of a gradient changed by a lot
fresh_copy
scale "$tmp/case/wte.grad.f32" 3.0 5
expect_fail "one element of the wte gradient tripled" 'wte .*FAIL'

# a loss term 1e-5 relative off: 10x the tolerance
fresh_copy
"$py" - "$tmp/case/manifest.yaml" <<'PY'
import re, sys
p = sys.argv[1]; t = open(p).read()
t = re.sub(r'(loss_ce: )(\S+)', lambda m: m.group(1) + repr(float(m.group(2)) * (1 + 1e-5)), t, count=1)
open(p, 'w').write(t)
PY
expect_fail "loss_ce 1e-5 relative off" 'loss_ce .*FAIL'

# one routing choice changed
fresh_copy
route=$(ls "$tmp/case"/route.*.i32 | head -1)
"$py" - "$route" <<'PY'
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
v = struct.unpack_from('<i', b, 0)[0]
struct.pack_into('<i', b, 0, 0 if v != 0 else 1)
open(p, 'wb').write(b)
PY
expect_fail "one routing choice changed" 'routing layer .*differ.*FAIL'

# a missing tensor file is named
fresh_copy
rm -- "$tmp/case/wte.f32"
if "$bin/switchyard" refcheck "$tmp/case" > "$tmp/out" 2>&1 || ! grep -q 'wte.f32' "$tmp/out"; then
  cat "$tmp/out"; bad "a missing tensor file was not reported by name"
else
  pass "a missing tensor file is reported: $(grep -m1 wte.f32 "$tmp/out")"
fi

# a case directory that does not exist
if "$bin/switchyard" refcheck "$tmp/no-such-case" > "$tmp/out" 2>&1 || ! grep -q "no-such-case: No such file" "$tmp/out"; then
  cat "$tmp/out"; bad "a missing case directory was not reported"
else
  pass "a missing case directory: $(grep -m1 no-such-case "$tmp/out" | cut -c1-100)..."
fi

# this script pointed at a missing refcases folder: fails, says why, and writes nothing
# (run in an empty directory with its own TMPDIR, both checked empty afterwards)
mkdir "$tmp/cwd" "$tmp/tmpdir"
if (cd "$tmp/cwd" && TMPDIR="$tmp/tmpdir" bash "$self" "$bin" "$tmp/missing" > "$tmp/out" 2>&1); then
  cat "$tmp/out"; bad "refcheck.sh passed with no refcases folder"
elif ! grep -q "no reference cases .*missing" "$tmp/out"; then
  cat "$tmp/out"; bad "refcheck.sh with no refcases folder does not say why"
elif [ -n "$(find "$tmp/cwd" "$tmp/tmpdir" -mindepth 1)" ] || [ -e "$tmp/missing" ]; then
  ls -la "$tmp/cwd" "$tmp/tmpdir"; bad "refcheck.sh with no refcases folder wrote files"
else
  pass "refcheck.sh with no refcases folder fails cleanly: $(head -1 "$tmp/out" | cut -c1-90)..."
fi

echo "$((n - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
