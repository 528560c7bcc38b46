#!/usr/bin/env bash
# `switchyard bench --json` prints one valid JSON object, also when the config's path
# holds a quote, a backslash and non-ASCII (it was printed unescaped), and the object
# names that path exactly. args: BIN_DIR REFCASES_DIR SOURCE_DIR
set -euo pipefail
bin=$1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "${tmp:?}"' EXIT
py=$(command -v /usr/bin/python3 || command -v python3)
dir="$tmp/we\"ird\\dir ü"
mkdir -p "$dir"
cfg="$dir/tiny.yaml"
cat > "$cfg" <<'YAML'
model: {d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, n_experts: 4, switch_every: 2, seq_len: 16}
train: {batch_size: 4, seq_len: 16, threads: 1}
YAML
"$bin/switchyard" bench "$cfg" --steps 1 --warmup 0 --threads 1 --json > "$tmp/out.json" 2> "$tmp/err" || {
  cat "$tmp/err"; echo "FAIL: bench --json exited non-zero"; exit 1; }
"$py" - "$tmp/out.json" "$cfg" <<'PY'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
assert text.count("\n") == 1 and text.endswith("\n"), "not one line: %r" % text
d = json.loads(text)
assert d["config"] == sys.argv[2], "config %r != %r" % (d["config"], sys.argv[2])
assert d["mode"] == "single" and d["steps"] == 1 and d["batch"] == 4 and d["seq"] == 16, d
for k in ("tokens_per_s", "step_ms", "forward_ms", "backward_ms", "mfu", "rss_ratio"):
    assert isinstance(d[k], (int, float)) and d[k] >= 0, (k, d[k])
assert isinstance(d["flops_per_token"], int) and d["flops_per_token"] > 0, d["flops_per_token"]
print("bench --json: valid, config path kept byte for byte:", d["config"][-20:])
PY
