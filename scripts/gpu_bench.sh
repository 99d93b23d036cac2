#!/usr/bin/env bash
# On a CUDA GPU machine: clipforge (built by scripts/build_cuda.sh) against PyTorch + open_clip,
# same model config and batch, in one run. Prints a markdown table; raw JSON lines and logs go
# to $OUT (default /tmp/gpu-bench).
#   scripts/gpu_bench.sh [BIN] [MODEL] [BATCH] [STEPS]   default: .gpu-carry/clipforge ViT-B-32 256 10
# Expects python3 with torch (CUDA) and the NVIDIA cu13 wheels (cuBLAS, cuRAND, NVRTC, cudart),
# as on the lent H200 machine; open_clip and its two missing needs are installed from
# .gpu-carry/whl when present (the machine cannot reach PyPI).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-.gpu-carry/clipforge}"; MODEL="${2:-ViT-B-32}"; BATCH="${3:-256}"; STEPS="${4:-10}"
OUT="${OUT:-/tmp/gpu-bench}"; mkdir -p "$OUT"
if ls .gpu-carry/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .gpu-carry/whl/*.whl && export PYTHONPATH=/tmp/site
fi
NV=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
export LD_LIBRARY_PATH="$NV:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" | tee -a "$OUT/gpu.txt"
chmod +x "$BIN"
: > "$OUT/clipforge.jsonl"
for flags in "--dtype f32" "--dtype f32 --tf32" "--dtype bf16 --tf32"; do
  echo "clipforge bench $flags" >&2
  # shellcheck disable=SC2086
  timeout 150 "$BIN" bench --device cuda --model "$MODEL" --batch-size "$BATCH" --steps "$STEPS" \
    --warmup 3 $flags --json >> "$OUT/clipforge.jsonl" 2>> "$OUT/clipforge.log" \
    || { echo "clipforge bench $flags failed:"; tail -20 "$OUT/clipforge.log"; }
done
echo "pytorch" >&2
timeout 240 python3 scripts/gpu_bench_pytorch.py "configs/models/$MODEL.json" "$BATCH" "$STEPS" 3 \
  > "$OUT/torch.jsonl" 2> "$OUT/torch.log" || { echo "pytorch failed:"; tail -20 "$OUT/torch.log"; }
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = lambda f: [json.loads(l) for l in open(os.path.join(out, f)) if l.strip()]
c, t = rows("clipforge.jsonl"), rows("torch.jsonl")
ceil = next((r["bf16_matmul_tflops"] for r in t if "bf16_matmul_tflops" in r), None)
print(f"bf16 matrix-product ceiling, measured (8192³, PyTorch): {ceil and round(ceil)} TFLOP/s")
print("| engine | precision | train step, s | pairs/s | train TFLOP/s | MFU | image encode, img/s | encode TFLOP/s |")
print("|---|---|---|---|---|---|---|---|")
for r in c:
    p = f"f32{' (TF32)' if r['tf32'] else ''} step, {r['encode_dtype']} encode"
    print(f"| clipforge | {p} | {r['train_step_s_median']:.3f} | {r['train_samples_per_s']:.0f} | "
          f"{r['train_tflops']:.1f} | {r['train_tflops'] / ceil:.1%} | {r['image_encode_per_s']:.0f} | "
          f"{r['image_encode_tflops']:.1f} |" if ceil else str(r))
for r in t[1:]:
    p = r["precision"] + (" (TF32)" if r["tf32"] and r["precision"] == "f32" else "")
    print(f"| {r['engine']} | {p} | {r['train_step_s_median']:.3f} | {r['train_samples_per_s']:.0f} | "
          f"{r['train_tflops']:.1f} | {r['train_tflops'] / ceil:.1%} | {r['image_encode_per_s']:.0f} | "
          f"{r['image_encode_tflops']:.1f} |")
PY
