#!/usr/bin/env bash
# Set-up shared by scripts/run.sh and scripts/test.sh: installs the Debian packages
# switchyard needs (when run as root; otherwise names the command to run), then
# configures and builds into build/ (or $SY_BUILD_DIR). Idempotent: quick when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake pkg-config
          libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
          libopenblas-dev libopenblas0-pthread libcyaml-dev libcmocka-dev
          libjansson-dev zlib1g-dev
          fortunes fortunes-de fortunes-es fortunes-it fortunes-ru
          python3 iproute2 procps
          slurm-wlm munge shellcheck python3-yaml systemd  # deploy/ recipes and their tests
          clang)  # tests/fuzz/fuzz.sh: libFuzzer targets
# PyTorch (large) only for the test that regenerates the reference cases (tests/oracle.sh)
[ "${SY_WITH_ORACLE:-0}" = 1 ] && PACKAGES+=(python3-torch)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

BUILD_DIR=${SY_BUILD_DIR:-build}
BUILD_TYPE=${SY_BUILD_TYPE:-RelWithDebInfo}
EXTRA=()
[ "${SY_SANITIZE:-0}" = 1 ] && EXTRA+=(-DSY_SANITIZE=ON)
[ "${CI:-}" = true ] && EXTRA+=(-DSY_WERROR=ON)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${EXTRA[@]}" >/dev/null
elif [ ${#EXTRA[@]} -gt 0 ]; then
  cmake -S . -B "$BUILD_DIR" "${EXTRA[@]}" >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null 2>"$BUILD_DIR/build.log" || {
  cat "$BUILD_DIR/build.log" >&2; echo "setup: build failed (log: $BUILD_DIR/build.log)" >&2; exit 1; }
grep -i 'warning' "$BUILD_DIR/build.log" >&2 || true
echo "setup: built $BUILD_DIR/bin/" >&2
