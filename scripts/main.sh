#!/usr/bin/env bash
# The README's main job: build and install marunochi, then check the installation.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo install --locked --path . --root "${MARUNOCHI_INSTALL_ROOT:-$HOME/.cargo}"
bin="${MARUNOCHI_INSTALL_ROOT:-$HOME/.cargo}/bin/marunochi"
echo
"$bin" doctor
echo
echo "Installed $bin. Point your editor at it: see the README (\"Wire it into your editor\")."
