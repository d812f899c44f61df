#!/usr/bin/env bash
# Installs what the test suite needs into .test-deps/ (never system-wide): real language servers
# (pylsp from PyPI, pyright from npm). Idempotent: a stamp per pinned version skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYLSP_VERSION=1.15.0
PYRIGHT_VERSION=1.1.414
DEPS=.test-deps
mkdir -p "$DEPS"

stamp() { [ -f "$DEPS/$1.stamp" ] && [ "$(cat "$DEPS/$1.stamp")" = "$2" ]; }

if ! stamp pylsp "$PYLSP_VERSION"; then
  echo "test-deps: installing python-lsp-server $PYLSP_VERSION into $DEPS/venv"
  python3 -m venv "$DEPS/venv"
  "$DEPS/venv/bin/pip" install --quiet --disable-pip-version-check "python-lsp-server==$PYLSP_VERSION"
  echo "$PYLSP_VERSION" > "$DEPS/pylsp.stamp"
fi

if ! stamp pyright "$PYRIGHT_VERSION"; then
  echo "test-deps: installing pyright $PYRIGHT_VERSION into $DEPS/node"
  mkdir -p "$DEPS/node"
  npm install --silent --no-audit --no-fund --prefix "$DEPS/node" "pyright@$PYRIGHT_VERSION"
  echo "$PYRIGHT_VERSION" > "$DEPS/pyright.stamp"
fi

"$DEPS/venv/bin/pylsp" --version >/dev/null
test -x "$DEPS/node/node_modules/.bin/pyright-langserver"
echo "test-deps: ready (pylsp $PYLSP_VERSION, pyright $PYRIGHT_VERSION)"

./scripts/fixtures.sh
