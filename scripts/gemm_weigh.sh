#!/usr/bin/env bash
# The residual block's matrix products on one thread (as each task of the fused block runs
# them), in the `gemm` crate (what clipforge and candle use), OpenBLAS (numpy's bundled build)
# and MKL (PyTorch's), for the `tiny` and `small` widths. Prints a markdown table of GFLOP/s,
# each engine's best over ROUNDS rounds taken in turns.
#   scripts/gemm_weigh.sh [ROWS] [REPS] [ROUNDS]   (defaults 260 20 3; 260 rows = 4 images of 65 tokens)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-260}"; REPS="${2:-20}"; ROUNDS="${3:-3}"
source scripts/venv.sh
cargo build --release -q -p clip --example gemm_weigh
OUT="$(mktemp -d)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), 1 thread; $ROWS rows, best of $REPS, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
    RAYON_NUM_THREADS=1 target/release/examples/gemm_weigh "$ROWS" "$REPS" > "$OUT/rust.$r.csv"
    "$VENV/bin/python" scripts/gemm_weigh.py "$ROWS" "$REPS" > "$OUT/py.$r.csv"
done
"$VENV/bin/python" - "$OUT" <<'PY'
import csv, glob, sys
best = {}
for f in glob.glob(f"{sys.argv[1]}/*.csv"):
    for row in csv.DictReader(open(f)):
        key = (row["preset"], row["weight"], row["product"], row["engine"])
        best[key] = max(best.get(key, 0.0), float(row["gflops"]))
engines = ["gemm crate", "OpenBLAS (numpy)", "MKL (PyTorch)"]
print("| preset | weight | product | " + " | ".join(engines) + " |")
print("|---|---|---|" + "---|" * len(engines))
rows = sorted({k[:3] for k in best}, key=lambda k: (k[0] != "tiny", k[1], k[2]))
for k in rows:
    print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(f"{best.get(k + (e,), 0):.1f}" for e in engines) + " |")
# The block's products together: total flop over total time at each engine's best rates.
width = {"tiny": (128, 512), "small": (384, 1536)}
def flop(k):
    w, h = width[k[0]]
    return {"in_proj": 3 * w * w, "out_proj": w * w, "c_fc": w * h, "c_proj": h * w}[k[1]]
for p in width:
    ks = [k for k in rows if k[0] == p]
    print(f"{p}, all twelve products: " + ", ".join(
        f"{e} {sum(map(flop, ks)) / sum(flop(k) / best[k + (e,)] for k in ks):.1f}" for e in engines) + " GFLOP/s")
PY
