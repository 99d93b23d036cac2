#!/usr/bin/env bash
# "Scratch or pretrained?" on the `captions` corpus (docs/pretrained.md): five runs with the
# same budget (800 steps of 64 pairs, AdamW, warm-up + cosine, weight decay 0.1), then each
# evaluated on held-out retrieval, zero-shot Fashion-MNIST and MNIST, and a linear probe on
# Fashion-MNIST. Wall time and peak memory of each training run come from /usr/bin/time -v.
#
#   scripts/pretrained_experiment.sh [a b c d e cache]   # default: a–e, in that order
#
# (a) both towers from scratch: `tiny`, lr 1e-3
# (b) LiT: DINOv2-S/14 locked but for its projection head (features cached) + CLIP's text
#     tower from scratch, lr 1e-3
# (c) LiT with MiniLM-L6 as the text tower, unlocked, lr 1e-4 (a pretrained tower's rate)
# (d) both pretrained and locked but for their projection heads, lr 1e-3
# (e) DINOv2-S/14 unlocked (fine-tuned) + CLIP's text tower from scratch, lr 1e-4, at 112 px
#     (its position grid interpolated to 8 × 8): at 224 px a step costs about 19 s on 2 cores,
#     800 steps over 4 hours; at 112 px about 3 s
# cache: one epoch (168 steps) of (b) with the feature cache filled, and one without it
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
B=target/release/clipforge
OUT=${OUT:-runs/pretrained}
STEPS=${STEPS:-800}
TEST_LIMIT=${TEST_LIMIT:-1000}
mkdir -p "$OUT"
$B model fetch dinov2-s14 && $B model fetch minilm-l6
for d in captions fashion-mnist mnist; do $B data fetch $d; done

# LiT: the image tower locked but for its projection head, its features cached.
lit=(--lock-image --lock-image-unlocked-groups 1 --no-augment)
common=(--dataset captions --batch-size 64 --wd 0.1 --quiet)
train() {
    local tag=$1; shift
    /usr/bin/time -v -o "$OUT/$tag.time" $B train "${common[@]}" --steps "${steps:-$STEPS}" \
        --out "$OUT/$tag" "$@" \
        2> "$OUT/$tag.log"
    grep -E "Elapsed|Maximum resident" "$OUT/$tag.time"
}
evaluate() {
    local run=$OUT/$1
    $B eval --checkpoint "$run" --dataset captions --task retrieval --json > "$run/retrieval.json"
    for d in fashion-mnist mnist; do
        $B eval --checkpoint "$run" --dataset $d --task zeroshot --test-limit "$TEST_LIMIT" \
            --json > "$run/zeroshot-$d.json"
    done
    $B eval --checkpoint "$run" --dataset fashion-mnist --task linear-probe --train-limit 2000 \
        --test-limit "$TEST_LIMIT" --json > "$run/probe-fashion-mnist.json"
}

for run in "${@:-a b c d e}"; do
    for r in $run; do
        echo "== ($r)"
        case $r in
            a) train a --model tiny --lr 1e-3 ;;
            b) train b --model lit-dinov2-s14 "${lit[@]}" --lr 1e-3 ;;
            c) train c --model lit-dinov2-s14-minilm "${lit[@]}" --lr 1e-4 ;;
            d) train d --model lit-dinov2-s14-minilm "${lit[@]}" --lock-text \
                   --lock-text-unlocked-layers 1 --lr 1e-3 ;;
            e) sed 's/"image_size": 224/"image_size": 112/' configs/models/lit-dinov2-s14.json \
                   > "$OUT/lit-dinov2-s14-112.json"
               train e --model "$OUT/lit-dinov2-s14-112.json" --no-augment --lr 1e-4 ;;
            cache) rm -rf "$OUT"/epoch-*
               steps=168 train epoch-cached --model lit-dinov2-s14 "${lit[@]}" --lr 1e-3
               steps=168 train epoch-uncached --model lit-dinov2-s14 "${lit[@]}" --lr 1e-3 \
                   --no-feature-cache
               continue ;;
            *) echo "unknown run $r (a–e, cache)"; exit 2 ;;
        esac
        evaluate "$r"
    done
done
