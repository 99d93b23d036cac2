#!/usr/bin/env bash
# clipforge against PyTorch (open_clip's model), side by side in one run: the same model
# config, batch and thread count. Prints a markdown table with the ratios.
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
    RAYON_NUM_THREADS="$THREADS" target/release/clipforge bench --model "$MODEL" \
        --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --json > "$OUT/clipforge.$r.json"
done
"$VENV/bin/python" - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
ts = [json.load(open(f"{out}/torch.{r}.json")) for r in range(1, rounds + 1)]
cs = [json.load(open(f"{out}/clipforge.{r}.json")) for r in range(1, rounds + 1)]
step = "train_step_s_median"
rates = ["image_encode_per_s", "text_encode_per_s", "tokenizer_per_s"]
# Each engine's best round: the least step time, the most throughput.
t = {step: min(x[step] for x in ts), **{k: max(x[k] for x in ts) for k in rates}, "engine": ts[0]["engine"]}
c = dict(cs[0])
c.update({step: min(x[step] for x in cs), **{k: max(x[k] for x in cs) for k in rates + ["loader_images_per_s"]}})
c["train_samples_per_s"] = c["batch_size"] / c[step]
print(f"| {c['model']}, batch {c['batch_size']}, {c['threads']} threads | {t['engine']} | clipforge | ratio |")
print("|---|---|---|---|")
print(f"| training step, s (median) | {t[step]:.3f} | {c[step]:.3f} | "
      f"{c[step] / t[step]:.2f} (time, clipforge / PyTorch) |")
for key, name in [("image_encode_per_s", "image encode, images/s"), ("text_encode_per_s", "text encode, texts/s"),
                  ("tokenizer_per_s", "tokenizer, captions/s (OpenAI's Python)")]:
    print(f"| {name} | {t[key]:.0f} | {c[key]:.0f} | {c[key] / t[key]:.2f}× |")
print(f"| loader ({c['loader_image_size']} px PNG), images/s | | {c['loader_images_per_s']:.0f} | "
      f"{c['loader_images_per_s'] / c['train_samples_per_s']:.1f}× what the step consumes |")
print()
print("rounds (PyTorch / clipforge): step s, image encode/s, text encode/s")
for r, (x, y) in enumerate(zip(ts, cs), 1):
    print(f"  {r}: {x[step]:.3f} / {y[step]:.3f}  ({y[step] / x[step]:.2f});  "
          f"{x['image_encode_per_s']:.0f} / {y['image_encode_per_s']:.0f};  "
          f"{x['text_encode_per_s']:.0f} / {y['text_encode_per_s']:.0f}")
# Within a round the engines run back to back, so a round's ratio sees one state of the machine;
# their median is less moved by one lucky or unlucky round than the best-against-best above.
med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
print(f"median of the rounds' ratios: step {med([y[step] / x[step] for x, y in zip(ts, cs)]):.2f}, "
      + ", ".join(f"{name} {med([y[k] / x[k] for x, y in zip(ts, cs)]):.2f}×"
                  for k, name in [("image_encode_per_s", "image encode"), ("text_encode_per_s", "text encode")]))
PY
rm -rf "$OUT"
