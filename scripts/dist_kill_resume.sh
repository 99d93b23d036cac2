#!/usr/bin/env bash
# The distributed run of docs/distributed.md, killed and resumed: `mpirun -np 2 clipforge train
# --distributed` on the built-in scenes, once straight through and once with rank 1 killed
# (SIGKILL) after a checkpoint; how long mpirun takes to stop the launch, then the resume as 2
# processes (its losses and weights against the straight run's) and as 1 (refused).
# Usage: scripts/dist_kill_resume.sh [STEPS] [BATCH_PER_PROCESS] [KILL_AT_STEP]
#        (defaults 200 64 110; a checkpoint every 50 steps)
# Needs a build with --features mpi and Open MPI's mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-200}
batch=${2:-64}
kill_at=${3:-110}
bin=$PWD/target/release/clipforge
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x RAYON_NUM_THREADS=1
     --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none
     --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca mpi_yield_when_idle 1 -np 2)
run=(train --distributed --model tiny --batch-size "$batch" --steps "$steps" --checkpoint-every 50 --quiet)
lines() { if [ -f "$1/metrics.jsonl" ]; then wc -l < "$1/metrics.jsonl"; else echo 0; fi; }

t0=$(date +%s.%N)
"${mpi[@]}" "$bin" "${run[@]}" --out "$out/straight" 2> "$out/straight.err"
t1=$(date +%s.%N)
echo "straight: $steps steps of 2 × $batch in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s," \
     "final loss $(tail -1 "$out/straight/metrics.jsonl" | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["loss"])');" \
     "rank 0 wrote: $(cd "$out/straight" && ls | tr '\n' ' ')(checkpoints: $(ls "$out/straight/checkpoints" | tr '\n' ' '))"

"${mpi[@]}" "$bin" "${run[@]}" --out "$out/killed" 2> "$out/killed.err" &
launcher=$!
while [ "$(lines "$out/killed")" -lt "$kill_at" ]; do
    kill -0 "$launcher" 2> /dev/null || { echo "the launch ended before step $kill_at"; exit 1; }
    sleep 0.05
done
victim=""
for p in $(pgrep -P "$launcher"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then victim=$p; fi
done
[ -n "$victim" ] || { echo "rank 1 not found among mpirun's children"; exit 1; }
k0=$(date +%s.%N)
kill -9 "$victim"
status=0
wait "$launcher" || status=$?
k1=$(date +%s.%N)
echo "killed rank 1 (pid $victim) at step $(lines "$out/killed"): mpirun exited with status $status" \
     "$(python3 -c "print(f'{$k1 - $k0:.1f}')") s later; it said:"
grep -m1 "noticed" "$out/killed.err" | sed 's/^/    /' || true

"${mpi[@]}" "$bin" train --distributed --resume "$out/killed" --quiet 2> "$out/resumed.err"
python3 - "$out/straight" "$out/killed" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(d + "/metrics.jsonl")] for d in sys.argv[1:])
la = {r["step"]: r["loss"] for r in a}
lb = {r["step"]: r["loss"] for r in b}
same = la == lb
print(f"resumed as 2 processes: {len(lb)} steps logged, losses {'identical to' if same else 'DIFFERENT from'} the straight run's")
PY
last() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")/model.safetensors"; }
if cmp -s "$(last "$out/straight")" "$(last "$out/killed")"; then
    echo "final checkpoint's model.safetensors: identical byte for byte"
else
    echo "final checkpoint's model.safetensors: DIFFERENT"
fi
if RAYON_NUM_THREADS=1 "$bin" train --resume "$out/killed" --quiet 2> "$out/one.err"; then
    echo "resumed as 1 process: NOT refused"
else
    echo "resumed as 1 process: refused: $(grep -m1 -i error "$out/one.err")"
fi
