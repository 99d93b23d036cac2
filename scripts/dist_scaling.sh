#!/usr/bin/env bash
# One process against two under mpirun, one thread each, the same global batch: samples/s
# (median step after the first 3) and the seconds per step spent in MPI collectives; and one
# process with both threads, what a user runs without MPI.
# Usage: scripts/dist_scaling.sh [MODEL] [GLOBAL_BATCH] [STEPS]   (defaults: tiny 128 20)
# Needs a build with --features mpi and Open MPI's mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny}
global=${2:-128}
steps=${3:-20}
bin=target/release/clipforge
out=$(mktemp -d)
mpi=(mpirun --allow-run-as-root --oversubscribe -x RAYON_NUM_THREADS=1)
common=(--model "$model" --steps "$steps" --checkpoint-every 100000 --quiet)

RAYON_NUM_THREADS=1 $bin train --batch-size "$global" --out "$out/one" "${common[@]}" 2> /dev/null
RAYON_NUM_THREADS=2 $bin train --batch-size "$global" --out "$out/threads" "${common[@]}" 2> /dev/null
"${mpi[@]}" -np 2 $bin train --distributed --batch-size $((global / 2)) --out "$out/two" "${common[@]}" 2> /dev/null

summary() {
    python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")][3:]
sps = statistics.median(r["samples_per_s"] for r in rows)
comm = [r["comm_s"] for r in rows if "comm_s" in r]
step = statistics.median(1 / r["samples_per_s"] for r in rows)
print(f"{sps:.1f} {statistics.median(comm) if comm else 0:.4f} {rows[-1]['loss']:.6f}")
PY
}
read -r one_sps _ one_loss <<< "$(summary "$out/one")"
read -r two_sps two_comm two_loss <<< "$(summary "$out/two")"
read -r thr_sps _ thr_loss <<< "$(summary "$out/threads")"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "$model, global batch $global, $steps steps, on $cpu ($(nproc) cores), 1 thread per process"
printf "%-28s %12s %14s %12s\n" "" "samples/s" "collectives s" "last loss"
printf "%-28s %12s %14s %12s\n" "1 process × $global" "$one_sps" "–" "$one_loss"
printf "%-28s %12s %14s %12s\n" "2 processes × $((global / 2)) (mpirun)" "$two_sps" "$two_comm" "$two_loss"
printf "%-28s %12s %14s %12s\n" "1 process × $global, 2 threads" "$thr_sps" "–" "$thr_loss"
python3 -c "print(f'2 processes against 1: {float($two_sps)/float($one_sps):.2f}×; against 1 process of 2 threads: {float($two_sps)/float($thr_sps):.2f}×')"
rm -rf "$out"
