#!/usr/bin/env bash
# The main job: set up, prepare the default multilingual corpus, train the default
# model on 2 local workers (switchyard up) with progress lines, and save it under
# runs/default/. Extra arguments go to
# `switchyard up` (e.g. --fresh, --workers 3, --set train.steps=200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BIN=${SY_BUILD_DIR:-build}/bin
"$BIN/switchyard" prepare
exec "$BIN/switchyard" up configs/default.yaml --workers 2 "$@"
