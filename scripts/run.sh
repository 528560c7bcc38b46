#!/usr/bin/env bash
# The main job: set up, prepare the default multilingual corpus, train the default
# model with progress lines, and save it under runs/default/. Extra arguments go to
# `switchyard train` (e.g. --fresh, --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BIN=${SY_BUILD_DIR:-build}/bin
"$BIN/switchyard" prepare
exec "$BIN/switchyard" train configs/default.yaml "$@"
