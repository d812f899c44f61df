#!/usr/bin/env bash
# The VS Code extension: installs its pinned npm packages (vscode-languageclient, TypeScript, vsce
# and Node 22, which vsce needs, all from npm), compiles it, runs its unit tests under node against a
# stand-in `vscode` module (no real VS Code UI runs here) and packages editors/vscode/marunochi.vsix.
set -euo pipefail
cd "$(dirname "$0")/../editors/vscode"

npm ci --no-audit --no-fund --loglevel=error
export PATH="$PWD/node_modules/.bin:$PATH"   # node 22 first: vsce needs it
echo "vscode: node $(node --version)"
tsc -p .
node --test test/*.test.js
vsce package --out marunochi.vsix
