#!/usr/bin/env bash
# Adapters in and out of the Python ecosystem, proven against the real libraries (README, "Adapters
# in and out"). Not part of `./scripts/test.sh`: PyPI's torch brings the CUDA libraries (~6 GB per
# virtual environment, two of them here), too much for CI. One command, on a machine with ~15 GB free:
#
#     ./scripts/interop.sh
#
# 1. Ours → PEFT: marunochi trains an adapter on the tiny Qwen2 fixture from real code (the functions
#    Bo Bayles wrote in more-itertools' history, mined with `data mine`); transformers + peft load it
#    and their logits must match ours within 1e-4.
# 2. TRL → ours: `curate --for trl` writes the TRL script next to the curated data; it trains a few
#    steps on the CPU (SFT, then DPO on the corrections); `adapters import` takes the result, our
#    logits must match PEFT's for it, and `complete` serves it.
# 3. Axolotl: `curate --for axolotl` writes its configs; Axolotl's own loader (`load_cfg`) and
#    accelerate's must accept them.
# Every Python tool runs offline, with telemetry off.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
deps=.interop-deps
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1 AXOLOTL_DO_NOT_TRACK=1 \
  WANDB_DISABLED=true TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1

venv() { # DIR PYTHON-IMPORTS PACKAGES...
  local dir=$1 imports=$2
  shift 2
  if ! "$dir/bin/python" -c "import $imports" 2>/dev/null; then
    echo "interop: installing $* into $dir (minutes: torch with its CUDA libraries)"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
}
venv $deps/trl "torch, transformers, peft, trl, accelerate" \
  torch==2.15.0 transformers==5.25.0 peft==0.21.2 trl==1.16.0 accelerate==1.16.0 datasets==5.2.0
venv $deps/axolotl "axolotl.cli.config" axolotl==0.19.0

cargo build --release --quiet --bin marunochi --example interop_logits
./scripts/fixtures.sh >/dev/null
./scripts/replay-repos.sh >/dev/null
bin=$root/target/release/marunochi
logits=$root/target/release/examples/interop_logits
model=$root/.test-deps/fixtures/tiny-qwen2-trainable
work=$(mktemp -d "${TMPDIR:-/tmp}/marunochi-interop.XXXXXX")
trap 'rm -rf "$work"' EXIT
export MARUNOCHI_HOME=$work/home
# Python sees no stray module of the caller's working directory.
cd "$work"
tokens=785,1140,1990,4051,11,364,25,198,262,470,856,353,220,17

echo "== real code: functions from more-itertools' history, mined and curated"
"$bin" config set engine.model "$model" >/dev/null
"$bin" data mine "$root/.test-deps/replay/more-itertools.git" --author bbayles
"$bin" curate --language python --out "$work/sets" --for trl --base-model "$model"
"$bin" curate --language python --out "$work/sets" --for axolotl --base-model "$model" >/dev/null
data=$work/sets/python

echo "== 1. ours -> PEFT"
"$bin" train --language python --model "$model" --data "$data" --steps 4 --lr 0.003 | tail -2
ours=$MARUNOCHI_HOME/adapters/python/v1
"$logits" "$model" "$ours" "$tokens" | "$root/$deps/trl/bin/python" "$root/scripts/interop/peft_logits.py" "$model" "$ours" "$tokens" "marunochi's adapter"

echo "== 2. TRL -> ours"
"$root/$deps/trl/bin/python" "$data/trl/train.py" --cpu --max-steps 2 --out "$work/trl-adapter" 2>&1 | grep -E "train_loss|adapter saved" || true
"$bin" adapters import "$work/trl-adapter" --language python
"$logits" "$model" "$work/trl-adapter" "$tokens" | "$root/$deps/trl/bin/python" "$root/scripts/interop/peft_logits.py" "$model" "$work/trl-adapter" "$tokens" "TRL's adapter"
# The same gate as a version trained here, on the newest fifth of the mined history (never trained
# on); a rejected one (exit 3) is promoted by force, to show that it serves.
gate=0
"$bin" eval --language python --adapter "$MARUNOCHI_HOME/adapters/python/v2" --heldout "$data/heldout-git.jsonl" \
  --model "$model" >"$work/gate.txt" || gate=$?
grep -E "PASS|FAIL|gate" "$work/gate.txt"
case $gate in
  0) "$bin" adapters promote --language python v2 ;;
  3) "$bin" adapters promote --language python v2 --force ;;
  *) echo "interop: the gate failed to run (exit $gate)" >&2; exit 1 ;;
esac
printf 'def chunked(iterable, n):\n    ' > "$work/m.py"
"$bin" complete "$work/m.py:1:4" --language python --json --max-tokens 8 |
  python3 -c 'import json, sys; r = json.load(sys.stdin); assert r["adapter"] == "v2", r; print("served by the imported adapter:", r["adapter"], repr(r["text"]))'

echo "== 3. Axolotl and accelerate read the generated configs"
"$root/$deps/axolotl/bin/python" - "$data/axolotl" <<'PY' 2>&1 | grep -E "^(accepted|FAIL)"
import sys
from accelerate.commands.config.config_args import load_config_from_file
from axolotl.cli.config import load_cfg
import axolotl, accelerate
d = sys.argv[1]
sft = load_cfg(f"{d}/config.yml")
assert (sft.adapter, sft.lora_r, sft.learning_rate) == ("lora", 16, 0.0002), sft
print(f"accepted by axolotl {axolotl.__version__}: config.yml (adapter {sft.adapter}, r {sft.lora_r}, lr {sft.learning_rate})")
dpo = load_cfg(f"{d}/dpo.yml")
print(f"accepted by axolotl {axolotl.__version__}: dpo.yml (rl {dpo.rl.value}, beta {dpo.rl_beta})")
launch = load_config_from_file(f"{d}/accelerate.yaml")
print(f"accepted by accelerate {accelerate.__version__}: accelerate.yaml ({launch.distributed_type.value}, {launch.num_processes} processes)")
PY
echo "interop: PASS"
