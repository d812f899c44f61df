#!/bin/bash
# The CUDA build's checks on the GPU machine, GPU against CPU in the same binary (compare the
# pairs' text and confidence): Qwen2 and llama as Q8_0 GGUF, llama as F32 safetensors, a LoRA on
# Qwen2; then the speed of a Qwen2.5-Coder-0.5B-shaped Q8_0 model. Needs Python with numpy and
# safetensors there (the PyTorch image has them); gguf comes in .gpu/.
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/gguf-*.whl && export PYTHONPATH=/tmp/site
(python3 scripts/gpu/make_model.py /tmp/q05b.gguf > /tmp/make.log 2>&1) &
maker=$!
xz -dc .gpu/marunochi.xz > /tmp/marunochi && chmod +x /tmp/marunochi
M=/tmp/marunochi
cublas=$(find /opt /usr -name 'libcublas.so.13' 2>/dev/null | head -1)
[ -n "$cublas" ] || { echo "no CUDA 13 libraries (libcublas.so.13) on this machine" >&2; exit 1; }
lib=$(dirname "$cublas")
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
echo "cuda libs: $lib"
echo "cpu: $(nproc) x $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ldd $M | grep -E 'not found|libcu|nvrtc'
export MARUNOCHI_HOME=/tmp/mhome
printf 'def add(a, b):\n    return \n' > /tmp/a.py
one() { echo "== $*"; MARUNOCHI_DEVICE=$1 timeout 120 $M complete --model "${@:2}" --json --max-tokens 24 2>&1 | tail -4; }
for m in .gpu/tiny-qwen2-q8_0.gguf .gpu/tiny-llama-q8_0.gguf .gpu/tiny-llama; do
  for d in cpu gpu; do one $d $m /tmp/a.py:1:11; done
done
for d in cpu gpu; do one $d .gpu/tiny-qwen2-q8_0.gguf --adapter .gpu/tiny-qwen2-lora /tmp/a.py:1:11; done
wait $maker; cat /tmp/make.log
for d in gpu cpu gpu; do
  echo "== q05b $d"; MARUNOCHI_DEVICE=$d timeout 150 $M complete --model /tmp/q05b.gguf fixtures/models.py:120:0 --json --max-tokens 64 2>&1 | tail -3
done
