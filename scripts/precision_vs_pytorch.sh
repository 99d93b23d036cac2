#!/usr/bin/env bash
# Reduced precision, clipforge against PyTorch, side by side in one run on the same model config,
# batch and threads: image and text encode rates in f32 and int8 (PyTorch: quantize_dynamic of
# every nn.Linear; clipforge: `--dtype int8`, the blocks' weight products), and how far bf16 and
# int8 move each engine's embeddings from its own f32 on the same weights and inputs (open_clip's
# seeded initialisation, loaded into clipforge).
#   scripts/precision_vs_pytorch.sh [MODEL] [BATCH] [STEPS] [THREADS] [ROUNDS]   e.g. ViT-B-32 32 3 2 2
# The engines take turns, ROUNDS times; each one's best round is compared.
# Makes its PyTorch venv once (scripts/venv.sh); builds clipforge in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-tiny}"; BATCH="${2:-64}"; STEPS="${3:-5}"; THREADS="${4:-$(nproc)}"; ROUNDS="${5:-2}"
source scripts/venv.sh
CFG="configs/models/$MODEL.json"
[ -f "$CFG" ] || { echo "error: no model config $CFG" >&2; exit 1; }
cargo build --release -q -p clipforge
cargo build --release -q -p clip-train --example precision_drift
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; model $MODEL, batch $BATCH, median of $STEPS, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
    PYTHONPATH=scripts "$VENV/bin/python" scripts/precision_pytorch.py "$CFG" "$BATCH" "$STEPS" "$THREADS" "$OUT" > "$OUT/torch.$r.json"
    for dt in f32 int8; do
        RAYON_NUM_THREADS="$THREADS" target/release/clipforge bench --model "$MODEL" --dtype "$dt" \
            --batch-size "$BATCH" --steps "$STEPS" --warmup 1 --json > "$OUT/clipforge.$dt.$r.json"
    done
done
"$VENV/bin/python" - "$OUT" "$ROUNDS" "$MODEL" <<'PY'
import json, sys
out, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
R = range(1, rounds + 1)
ts = [json.load(open(f"{out}/torch.{r}.json")) for r in R]
cf = {dt: [json.load(open(f"{out}/clipforge.{dt}.{r}.json")) for r in R] for dt in ("f32", "int8")}
t0 = ts[0]
print(f"PyTorch {t0['engine']}, quantized engine {t0['quantized_engine']}, {t0['quantized_linears']} "
      f"linear layers quantised; clipforge's int8 products ran on: {cf['int8'][0]['encode_kernel']}")
print()
print(f"| {model}, batch {t0['batch']}, {t0['threads']} threads, best of {rounds} rounds | PyTorch f32 "
      f"| PyTorch int8 | clipforge f32 | clipforge int8 | clipforge's best / PyTorch's best |")
print("|---|---|---|---|---|---|")
for tower, key in [("image", "image_encode_per_s"), ("text", "text_encode_per_s")]:
    t = [max(x[f"{tower}_f32"] for x in ts), max(x[f"{tower}_int8"] for x in ts)]
    c = [max(x[key] for x in cf["f32"]), max(x[key] for x in cf["int8"])]
    print(f"| {tower} encode, items/s | " + " | ".join(f"{v:.1f}" for v in t + c)
          + f" | **{max(c) / max(t):.2f}×** |")
print()
print("rounds (PyTorch f32 / int8 ; clipforge f32 / int8), image | text:")
for r, (t, f, q) in enumerate(zip(ts, cf["f32"], cf["int8"]), 1):
    print(f"  {r}: {t['image_f32']:.1f} / {t['image_int8']:.1f} ; {f['image_encode_per_s']:.1f} / "
          f"{q['image_encode_per_s']:.1f}   |   {t['text_f32']:.1f} / {t['text_int8']:.1f} ; "
          f"{f['text_encode_per_s']:.1f} / {q['text_encode_per_s']:.1f}")
print()
PY
RAYON_NUM_THREADS="$THREADS" target/release/examples/precision_drift "$MODEL" "$OUT"
