#!/usr/bin/env bash
# The oracle still agrees with the committed reference cases: tests/oracle/refgen.py
# regenerates every case in memory (PyTorch float64) and compares it with tests/refcases/
# (weights, tokens and routing identical, loss terms to 1e-10, gradients to 1e-6).
# Skipped (exit 77) when Debian's python3-torch is not installed.
# args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
refcases=${2:?usage: oracle.sh BIN_DIR REFCASES_DIR SOURCE_DIR}
src=${3:?usage: oracle.sh BIN_DIR REFCASES_DIR SOURCE_DIR}
py=${SY_ORACLE_PYTHON:-/usr/bin/python3}  # Debian's python, where python3-torch lives
if [ ! -x "$py" ] || ! "$py" -c 'import torch' 2>/dev/null; then
  echo "SKIP: PyTorch for $py is not installed (apt-get install python3-torch);" \
       "the committed cases in $refcases are still used by the other tests"
  exit 77
fi
[ -d "$refcases" ] || { echo "FAIL: $refcases: no such directory (tests/oracle/refgen.py write $refcases)"; exit 1; }
"$py" "$src/tests/oracle/refgen.py" check "$refcases"
