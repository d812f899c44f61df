#!/usr/bin/env bash
# Optional reference for `cargo bench --bench engine_speed`: llama.cpp's prebuilt CPU build from npm
# (node-llama-cpp), installed into .test-deps/bench. Not needed by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_LLAMA_CPP_VERSION=3.22.1
mkdir -p .test-deps/bench
if [ "$(cat .test-deps/bench/stamp 2>/dev/null)" != "$NODE_LLAMA_CPP_VERSION" ]; then
  # --ignore-scripts: its postinstall would try to download or build; the prebuilt binaries ship in
  # the npm package itself.
  npm install --silent --no-audit --no-fund --ignore-scripts --prefix .test-deps/bench "node-llama-cpp@$NODE_LLAMA_CPP_VERSION"
  echo "$NODE_LLAMA_CPP_VERSION" > .test-deps/bench/stamp
fi
echo "bench-deps: node-llama-cpp $NODE_LLAMA_CPP_VERSION ready"
