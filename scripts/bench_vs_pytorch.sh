#!/usr/bin/env bash
# clipforge against PyTorch (open_clip's model), side by side in one run: the same model
# config, batch and thread count, each engine in f32, in bf16 (PyTorch: autocast, and the
# encoders with bf16 weights; clipforge: `--dtype bf16`, bf16 products where the CPU has AMX or
# AVX512-BF16) and, for encoding, in int8 (PyTorch: quantize_dynamic of every nn.Linear;
# clipforge: `--dtype int8`). Prints a markdown table with the ratio of each engine's best mode,
# and the ratios at equal precision.
#   scripts/bench_vs_pytorch.sh [MODEL] [BATCH] [STEPS] [THREADS] [ROUNDS]   e.g. tiny 256 10 2 2
# The engines take turns, ROUNDS times (PyTorch, clipforge, PyTorch, clipforge, …), so a drift
# of the machine's speed during the run (a VM's neighbours) falls on both; each engine's best
# round is compared, and every round's figures are printed too.
# Makes its PyTorch venv once (scripts/venv.sh); builds clipforge in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-tiny}"; BATCH="${2:-256}"; STEPS="${3:-10}"; THREADS="${4:-$(nproc)}"; ROUNDS="${5:-2}"
WARMUP=2
source scripts/venv.sh
CFG="configs/models/$MODEL.json"
[ -f "$CFG" ] || { echo "error: no model config $CFG" >&2; exit 1; }
cargo build --release -q -p clipforge
OUT="$(mktemp -d)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; model $MODEL, batch $BATCH, median of $STEPS, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
    "$VENV/bin/python" scripts/bench_pytorch.py "$CFG" "$BATCH" "$STEPS" "$WARMUP" "$THREADS" > "$OUT/torch.$r.json"
    for dt in f32 bf16 int8; do
        RAYON_NUM_THREADS="$THREADS" target/release/clipforge bench --model "$MODEL" --dtype "$dt" \
            --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --json > "$OUT/clipforge.$dt.$r.json"
    done
done
"$VENV/bin/python" - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
R = range(1, rounds + 1)
ts = [json.load(open(f"{out}/torch.{r}.json")) for r in R]
cf = [json.load(open(f"{out}/clipforge.f32.{r}.json")) for r in R]
cb = [json.load(open(f"{out}/clipforge.bf16.{r}.json")) for r in R]
ci = [json.load(open(f"{out}/clipforge.int8.{r}.json")) for r in R]
step, img, txt = "train_step_s_median", "image_encode_per_s", "text_encode_per_s"
low = lambda xs, k: min(x[k] for x in xs)     # best round of a time
high = lambda xs, k: max(x[k] for x in xs)    # best round of a rate
c0 = cf[0]
print(f"CPU bf16/int8 features: {ts[0]['cpu_flags'] or 'none'}; clipforge's products ran on: "
      f"bf16 {cb[0]['encode_kernel']}, {ci[0]['encode_kernel']}; PyTorch's quantized engine: "
      f"{ts[0]['quantized_engine']}")
print()
print(f"| {c0['model']}, batch {c0['batch_size']}, {c0['threads']} threads, best of {rounds} rounds "
      f"| PyTorch f32 | PyTorch bf16 autocast | PyTorch bf16 weights | PyTorch int8 "
      f"| clipforge f32 | clipforge bf16 | clipforge int8 | clipforge's best / PyTorch's best |")
print("|---|---|---|---|---|---|---|---|---|")
t_best = min(low(ts, step), low(ts, step + "_bf16"))
c_best = min(low(cf, step), low(cb, step))
print(f"| training step, s | {low(ts, step):.3f} | {low(ts, step + '_bf16'):.3f} | | | {low(cf, step):.3f} "
      f"| {low(cb, step):.3f} | | **{c_best / t_best:.2f}** (time) |")
same = []
for key, name in [(img, "image encode, images/s"), (txt, "text encode, texts/s")]:
    t4 = [high(ts, key), high(ts, key + "_bf16"), high(ts, key + "_bf16_weights"), high(ts, key + "_int8")]
    c3 = [high(cf, key), high(cb, key), high(ci, key)]
    print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in t4 + c3)
          + f" | **{max(c3) / max(t4):.2f}×** |")
    same.append(f"{name.split(',')[0]}: f32 {c3[0] / t4[0]:.2f}×, bf16 {c3[1] / max(t4[1:3]):.2f}×, "
                f"int8 {c3[2] / t4[3]:.2f}×")
print(f"| tokenizer, captions/s | {high(ts, 'tokenizer_per_s'):.0f} (OpenAI's Python) | | | | "
      f"{high(cf, 'tokenizer_per_s'):.0f} | | | {high(cf, 'tokenizer_per_s') / high(ts, 'tokenizer_per_s'):.0f}× |")
print()
same.insert(0, f"training step time: f32 {low(cf, step) / low(ts, step):.2f}, bf16 "
                f"{low(cb, step) / low(ts, step + '_bf16'):.2f}")
print("at equal precision, clipforge / PyTorch's best of that precision: " + "; ".join(same))
print()
print("rounds (step: PyTorch f32 / autocast ; clipforge f32 / bf16; encoding: PyTorch f32 / autocast / "
      "bf16 weights / int8 ; clipforge f32 / bf16 / int8):")
for r, (t, f, b, i) in enumerate(zip(ts, cf, cb, ci), 1):
    print(f"  {r}: step {t[step]:.3f} / {t[step + '_bf16']:.3f} ; {f[step]:.3f} / {b[step]:.3f}   "
          f"image {t[img]:.1f} / {t[img + '_bf16']:.1f} / {t[img + '_bf16_weights']:.1f} / {t[img + '_int8']:.1f} ; "
          f"{f[img]:.1f} / {b[img]:.1f} / {i[img]:.1f}   "
          f"text {t[txt]:.1f} / {t[txt + '_bf16']:.1f} / {t[txt + '_bf16_weights']:.1f} / {t[txt + '_int8']:.1f} ; "
          f"{f[txt]:.1f} / {b[txt]:.1f} / {i[txt]:.1f}")
PY
rm -rf "$OUT"
