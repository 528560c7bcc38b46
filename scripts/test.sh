#!/usr/bin/env bash
# The test command: set up, then run the whole suite with ctest. Extra arguments go to
# ctest (e.g. -R refcheck, -L drill).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${SY_BUILD_DIR:-build}
exec ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)" "$@"
