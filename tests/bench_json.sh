#!/usr/bin/env bash
# `switchyard bench --json` prints one JSON object a parser accepts, whatever the config
# path holds (a quote and a backslash here; it was printed unescaped). args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "${tmp:?}"' EXIT
py=$(command -v /usr/bin/python3 || command -v python3)
dir="$tmp/we\"ird\\dir"
mkdir -p "$dir"
cat > "$dir/tiny.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {batch_size: 4, seq_len: 16, threads: 1}
data: {dir: $tmp/nodata}
YAML
"$bin/switchyard" bench "$dir/tiny.yaml" --steps 2 --warmup 0 --json > "$tmp/out.json" 2> "$tmp/err"
"$py" - "$tmp/out.json" "$dir/tiny.yaml" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read())
assert d["config"] == sys.argv[2], (d["config"], sys.argv[2])
assert d["mode"] == "single" and d["tokens_per_s"] > 0 and d["steps"] == 2, d
print("1 passed, 0 failed")
PY
