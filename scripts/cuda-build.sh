#!/usr/bin/env bash
# Builds marunochi with `--features cuda` on a machine without a GPU or a CUDA install, and packs
# what scripts/gpu/run.sh needs on a GPU machine into .gpu/ (untracked; hand it over as a folder).
# The CUDA 13.0 toolkit pieces come from PyPI's nvidia-* wheels into .cuda/; the driver library is
# a stub for linking only (the GPU machine's own libcuda is used at run time). 13.0 matches driver
# 580: a newer toolkit writes PTX that driver cannot load. CUDA_COMPUTE_CAP picks the GPU
# generation candle's kernels are compiled for (default 90: H100/H200; 86 for an RTX 30xx, 89 for
# an RTX 40xx): they do not run on older GPUs. Takes ~20 min on 2 cores, mostly candle's kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=$PWD/.cuda
root=$cuda/nvidia/cu13
if [ ! -e "$root/lib/stubs/libcuda.so" ]; then
  rm -rf "$cuda" # a half-finished earlier attempt
  mkdir -p "$cuda/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cuda/wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
  for wheel in "$cuda"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$cuda"; done
  chmod +x "$root"/bin/* "$root"/nvvm/bin/*
  for lib in cudart nvrtc curand cublas cublasLt; do
    ln -sf "$(basename "$(ls "$root"/lib/lib$lib.so.* | head -1)")" "$root/lib/lib$lib.so"
  done
  # Every driver function cudarc declares, as a do-nothing symbol, under libcuda's soname.
  mkdir -p "$root/lib/stubs"
  grep -ohE '\bfn cu[A-Za-z0-9_]+\(' "$(cargo metadata --format-version 1 --locked --features cuda |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))' |
    xargs dirname)/src/driver/sys/mod.rs" | sed -E 's/fn (.*)\(/int \1(void) { return 999; }/' | sort -u > "$cuda/libcuda.c"
  cc -shared -fPIC -o "$root/lib/stubs/libcuda.so.1" "$cuda/libcuda.c" -Wl,-soname,libcuda.so.1
  ln -sf libcuda.so.1 "$root/lib/stubs/libcuda.so"
fi
export CUDA_PATH=$root PATH=$root/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
cargo build --release --locked --features cuda --bin marunochi --target-dir target/cuda

./scripts/fixtures.sh
mkdir -p .gpu
fixtures=.test-deps/fixtures
cp -r $fixtures/qwen2.5-tokenizer $fixtures/tiny-llama $fixtures/tiny-llama-q8_0.gguf \
  $fixtures/tiny-qwen2-q8_0.gguf $fixtures/tiny-qwen2-lora .gpu/
strip -o .gpu/marunochi target/cuda/release/marunochi
xz -T0 -f .gpu/marunochi
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .gpu gguf==0.19.0
du -sh .gpu
echo "On the GPU machine (with .gpu/ next to the checkout): bash scripts/gpu/run.sh"
