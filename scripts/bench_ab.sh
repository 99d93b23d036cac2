#!/usr/bin/env bash
# Two commits of clipforge side by side in one run: `clipforge bench` of each, taking turns.
#   scripts/bench_ab.sh OLD_REV [NEW_REV] [MODEL] [BATCH] [STEPS] [ROUNDS]   e.g. a80d6e5 HEAD tiny 256 5 4
# Each revision is built (release) from a git worktree under target/ab/ into its own binary;
# the binaries run in turns, the order swapped every round (old new, new old, …), so the
# machine's drift falls on both. Prints each round, the median of the rounds' new/old ratios
# and the ratio of each side's best round (time: < 1 is faster; rates: > 1 is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="${1:?usage: scripts/bench_ab.sh OLD_REV [NEW_REV] [MODEL] [BATCH] [STEPS] [ROUNDS]}"
NEW="${2:-HEAD}"; MODEL="${3:-tiny}"; BATCH="${4:-256}"; STEPS="${5:-5}"; ROUNDS="${6:-4}"
ROOT="$PWD"
mkdir -p target/ab
build() {  # REV → path of its binary
    local sha; sha="$(git rev-parse --short=9 "$1")"
    local bin="$ROOT/target/ab/clipforge-$sha"
    if [ ! -x "$bin" ]; then
        local wt="$ROOT/target/ab/src-$sha"
        [ -d "$wt" ] || git worktree add -q --detach "$wt" "$sha"
        (cd "$wt" && cargo build --release -q -p clipforge --target-dir "$ROOT/target/ab/build")
        cp "$ROOT/target/ab/build/release/clipforge" "$bin"
        git worktree remove --force "$wt"
    fi
    echo "$bin"
}
A="$(build "$OLD")"; B="$(build "$NEW")"
OUT="$(mktemp -d)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) threads; $MODEL, batch $BATCH, median of $STEPS, $ROUNDS rounds; old $OLD, new $NEW" >&2
for r in $(seq 1 "$ROUNDS"); do
    order="old new"; [ $((r % 2)) -eq 0 ] && order="new old"
    for side in $order; do
        bin="$A"; [ "$side" = new ] && bin="$B"
        "$bin" bench --model "$MODEL" --batch-size "$BATCH" --steps "$STEPS" --json > "$OUT/$side.$r.json"
    done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
old = [json.load(open(f"{out}/old.{r}.json")) for r in range(1, rounds + 1)]
new = [json.load(open(f"{out}/new.{r}.json")) for r in range(1, rounds + 1)]
rows = [("train_step_s_median", "training step, s", "time"), ("image_encode_per_s", "image encode, images/s", "rate"),
        ("text_encode_per_s", "text encode, texts/s", "rate"), ("tokenizer_per_s", "tokenizer, captions/s", "rate"),
        ("loader_images_per_s", "loader, images/s", "rate"), ("peak_rss_mb", "peak memory, MiB", "memory")]
print(f"| {old[0]['model']}, batch {old[0]['batch_size']}, {old[0]['threads']} threads | "
      + " | ".join(f"round {r} old / new" for r in range(1, rounds + 1))
      + " | median of new/old | best new / best old |")
print("|---|" + "---|" * (rounds + 2))
for key, name, kind in rows:
    cells = [f"{o[key]:.3f} / {n[key]:.3f}" if kind == "time" else f"{o[key]:,.0f} / {n[key]:,.0f}"
             for o, n in zip(old, new)]
    ratio = statistics.median(n[key] / o[key] for o, n in zip(old, new))
    best = min if kind != "rate" else max
    print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f} | "
          f"{best(n[key] for n in new) / best(o[key] for o in old):.2f} |")
PY
rm -rf "$OUT"
