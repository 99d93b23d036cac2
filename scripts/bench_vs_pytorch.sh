#!/usr/bin/env bash
# clipforge against PyTorch (open_clip's model), side by side in one run: the same model
# config, batch and thread count. Prints a markdown table with the ratios.
#   scripts/bench_vs_pytorch.sh [MODEL] [BATCH] [STEPS] [THREADS]     e.g. tiny 256 10 2
# Makes its PyTorch venv once (scripts/venv.sh); builds clipforge in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-tiny}"; BATCH="${2:-256}"; STEPS="${3:-10}"; THREADS="${4:-$(nproc)}"; WARMUP=2
source scripts/venv.sh
CFG="configs/models/$MODEL.json"
[ -f "$CFG" ] || { echo "error: no model config $CFG" >&2; exit 1; }
cargo build --release -q -p clipforge
OUT="$(mktemp -d)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; model $MODEL, batch $BATCH, median of $STEPS" >&2
"$VENV/bin/python" scripts/bench_pytorch.py "$CFG" "$BATCH" "$STEPS" "$WARMUP" "$THREADS" > "$OUT/torch.json"
RAYON_NUM_THREADS="$THREADS" target/release/clipforge bench --model "$MODEL" \
    --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --json > "$OUT/clipforge.json"
"$VENV/bin/python" - "$OUT/torch.json" "$OUT/clipforge.json" <<'PY'
import json, sys
t, c = (json.load(open(p)) for p in sys.argv[1:3])
print(f"| {c['model']}, batch {c['batch_size']}, {c['threads']} threads | {t['engine']} | clipforge | ratio |")
print("|---|---|---|---|")
print(f"| training step, s (median) | {t['train_step_s_median']:.3f} | {c['train_step_s_median']:.3f} | "
      f"{c['train_step_s_median'] / t['train_step_s_median']:.2f} (time, clipforge / PyTorch) |")
for key, name in [("image_encode_per_s", "image encode, images/s"), ("text_encode_per_s", "text encode, texts/s"),
                  ("tokenizer_per_s", "tokenizer, captions/s (OpenAI's Python)")]:
    print(f"| {name} | {t[key]:.0f} | {c[key]:.0f} | {c[key] / t[key]:.2f}× |")
print(f"| loader ({c['loader_image_size']} px PNG), images/s | | {c['loader_images_per_s']:.0f} | "
      f"{c['loader_images_per_s'] / c['train_samples_per_s']:.1f}× what the step consumes |")
PY
rm -rf "$OUT"
