#!/usr/bin/env bash
# Builds the fuzz targets with clang -fsanitize=fuzzer,address,undefined into their own
# build directory and runs each for SY_FUZZ_SECONDS (default 5) from its seed corpus
# (new inputs go to a scratch copy; the checked-in corpus is never written). Prints
# executions and crashes per target; fails on any crash, leak or sanitizer report.
# Exit 77 (skipped) when clang is not installed.
# args: SOURCE_DIR FUZZ_BUILD_DIR [TARGET...]
set -euo pipefail
src=$1 build=$2
shift 2
secs=${SY_FUZZ_SECONDS:-5}
command -v clang > /dev/null || { echo "clang not installed (Debian package clang): fuzzing skipped"; exit 77; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope data_header status ckpt_manifest refcase config tokens cert)
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang cmake -S "$src" -B "$build" -DSY_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 1; }
fi
cmake --build "$build" -j2 --target $(printf 'fuzz_%s ' "${targets[@]}") > "$build.build.log" 2>&1 ||
  { tail -30 "$build.build.log"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "${tmp:?}"' EXIT
bad=0
printf '%-14s %10s %10s %8s %s\n' target executions "exec/s" crashes "corpus (seed -> end)"
for t in "${targets[@]}"; do
  mkdir -p "$tmp/$t"
  seeds=$(find "$src/tests/fuzz/corpus/$t" -type f | wc -l)
  rc=0
  (cd "$tmp" && "$build/bin/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 \
    -artifact_prefix="$tmp/crash-$t-" "$tmp/$t" "$src/tests/fuzz/corpus/$t") > "$tmp/$t.log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$tmp/$t.log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$tmp/$t.log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "$tmp" -maxdepth 1 -name "crash-$t-*" | wc -l)
  printf '%-14s %10s %10s %8s %s -> %s\n' "$t" "$execs" "$rate" "$crashes" "$seeds" "$(find "$tmp/$t" -type f | wc -l)"
  if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
    bad=1
    echo "FAIL: fuzz_$t (exit $rc):"; grep -E "ERROR|SUMMARY|#0|#1|#2|#3" "$tmp/$t.log" | head -20
    for c in "$tmp"/crash-"$t"-*; do [ -f "$c" ] && { echo "input:"; od -c "$c" | head -5; }; done
  fi
done
exit $bad
