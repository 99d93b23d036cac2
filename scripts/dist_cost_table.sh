#!/usr/bin/env bash
# docs/distributed.md's cost model: what a data-parallel step moves per device against what it
# computes, from `clipforge estimate` (model FLOPs and parameters counted from each config).
# Usage: scripts/dist_cost_table.sh [DEVICES] [DEVICE_TFLOPS] [LINK_GB/S]   (defaults: 8 100 25)
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-8}
tflops=${2:-100}
link=${3:-25}
bin=target/release/clipforge
echo "| model | global batch | per device | features all-gathered | gradients all-reduced | FLOPs per byte | moving / computing at ${link} GB/s, ${tflops} TFLOP/s |"
echo "|---|---|---|---|---|---|---|"
for model in tiny ViT-B-32 ViT-L-14; do
    for batch in 256 1024 4096 32768; do
        $bin estimate --model "$model" --samples 1e9 --batch-size "$batch" --devices "$devices" \
            --device-tflops "$tflops" --link-gbytes "$link" --no-measure --json |
            python3 -c '
import json, sys
e = json.load(sys.stdin)
c = e["communication"]
mb = lambda b: "{:,.1f} MB".format(b / 1e6)
print("| {} | {:,} | {:,.0f} | {} | {} | {:,.0f} | {:,.1f} ms / {:,.1f} ms |".format(
    e["model"], e["batch_size"], c["per_device_batch"], mb(c["feature_gather_bytes"]),
    mb(c["gradient_reduce_bytes"]), c["flops_per_byte"], c["comm_s"] * 1e3, c["compute_s"] * 1e3))'
    done
done
