#!/usr/bin/env bash
# The whole test suite, as CI runs it: test dependencies, formatting, lints, then every test in
# release mode (one build serves the tests and the benchmarks' binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/test-deps.sh
./scripts/vscode.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo test --release --locked "$@"
