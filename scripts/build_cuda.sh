#!/usr/bin/env bash
# Build clipforge with the CUDA backend (`--features cuda`) on a machine WITHOUT a GPU or a CUDA
# install: nvcc, the CUDA headers and the runtime libraries come from NVIDIA's PyPI wheels, and
# the driver library (libcuda.so, present only where a GPU driver is) is replaced at link time by
# a stub holding the same symbol names. The real libcuda.so.1 is loaded where the binary runs.
#
#   scripts/build_cuda.sh [COMPUTE_CAP] [FEATURES]   # default 90 (Hopper: H100/H200), cuda
#   scripts/build_cuda.sh 90 nccl                     # + MPI and NCCL: train --distributed on GPUs
#
# Output: target-cuda/release/clipforge. Run it where the CUDA 13 driver and libraries are
# (LD_LIBRARY_PATH must name the directories of libcublas.so.13, libcudart.so.13,
# libcurand.so.10, libnvrtc.so.13; scripts/gpu_bench.sh does this on the lent machine).
# On a machine with a CUDA 13 toolkit installed, `cargo build --release --features cuda` is all
# it takes (set CUDA_COMPUTE_CAP where nvidia-smi is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
CAP="${1:-90}"
FEATURES="${2:-cuda}"
TOOLS="${CUDA_TOOLS:-$PWD/.cuda-tools}"
PKGS=(nvidia-cuda-nvcc==13.0.* nvidia-cuda-crt==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-runtime==13.0.*
      nvidia-cuda-cccl==13.0.* nvidia-cublas==13.* nvidia-curand==10.* nvidia-cuda-nvrtc==13.0.*)
ROOT="$TOOLS/x/nvidia/cu13"
if [ ! -x "$ROOT/nvvm/bin/cicc" ] || [ ! -f "$ROOT/include/crt/host_config.h" ]; then
  mkdir -p "$TOOLS/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$TOOLS/wheels" "${PKGS[@]}"
  rm -rf "$TOOLS/x.part" && mkdir -p "$TOOLS/x.part"
  for w in "$TOOLS"/wheels/*.whl; do unzip -q -o "$w" -d "$TOOLS/x.part"; done
  rm -rf "$TOOLS/x" && mv "$TOOLS/x.part" "$TOOLS/x"     # complete or absent
fi
# NCCL (feature nccl): its own wheel, libnccl.so.2 and nccl.h.
NCCL="$TOOLS/nccl/nvidia/nccl"
if [[ "$FEATURES" == *nccl* ]] && [ ! -f "$NCCL/lib/libnccl.so.2" ]; then
  mkdir -p "$TOOLS/nccl-wheel"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_18_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$TOOLS/nccl-wheel" 'nvidia-nccl-cu13==2.*'
  rm -rf "$TOOLS/nccl.part" && mkdir -p "$TOOLS/nccl.part"
  unzip -q -o "$TOOLS"/nccl-wheel/*.whl -d "$TOOLS/nccl.part"
  rm -rf "$TOOLS/nccl" && mv "$TOOLS/nccl.part" "$TOOLS/nccl"
fi
[ -f "$NCCL/lib/libnccl.so.2" ] && ln -sf libnccl.so.2 "$NCCL/lib/libnccl.so"
# Unversioned names for the linker.
for l in cudart cublas cublasLt nvrtc; do ln -sf "lib$l.so.13" "$ROOT/lib/lib$l.so"; done
ln -sf libcurand.so.10 "$ROOT/lib/libcurand.so"
# libcuda stub: every driver entry point cudarc declares, as an empty function.
SRC=$(cargo metadata --format-version 1 --all-features 2>/dev/null | python3 -c \
  'import json,sys; m=json.load(sys.stdin); print([p for p in m["packages"] if p["name"]=="cudarc"][0]["manifest_path"].rsplit("/",1)[0])')
mkdir -p "$TOOLS/stub"
grep -hoE '^\s+fn (cu[A-Za-z0-9_]+)\(' "$SRC/src/driver/sys/mod.rs" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' \
  | sort -u | awk '{print "void " $1 "(void){}"}' > "$TOOLS/stub/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TOOLS/stub/libcuda.so" "$TOOLS/stub/stub.c"

export CUDA_HOME="$ROOT" CUDA_PATH="$ROOT" CUDA_COMPUTE_CAP="$CAP"
export PATH="$ROOT/bin:$PATH"
export LIBRARY_PATH="$TOOLS/stub:$ROOT/lib:$NCCL/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
# A portable CPU target (the config's target-cpu=native would tie the binary to this CPU).
export RUSTFLAGS="-C target-cpu=x86-64-v3 -L $TOOLS/stub -L $ROOT/lib -L $NCCL/lib"
cargo build --release --features "$FEATURES" -p clipforge --target-dir target-cuda
ls -la target-cuda/release/clipforge
