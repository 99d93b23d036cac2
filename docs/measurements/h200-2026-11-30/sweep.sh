#!/usr/bin/env bash
# Recipe sweep for the quickstart at the CPU quickstart's sample budget (450 x 64 pairs).
python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.gpu-carry/clipforge.xz'),open('.gpu-carry/clipforge','wb'))"; chmod +x .gpu-carry/clipforge
NV=$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))')
export LD_LIBRARY_PATH=$NV:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-} RAYON_NUM_THREADS=2
run() { name=$1; shift; ( timeout ${TO:-240} .gpu-carry/clipforge quickstart --device cuda --json --out /tmp/$name "$@" > /tmp/$name.json 2> /tmp/$name.err; echo "$name $* -> $(cat /tmp/$name.json) $(tail -c 300 /tmp/$name.err | tr "\n" " " | grep -o "error.*")" ) & }
run A --batch-size 64 --steps 450 --hard-negatives 4 --lr 1e-3
run B --batch-size 64 --steps 450 --hard-negatives 4 --lr 3e-3
run C --batch-size 32 --steps 900 --hard-negatives 4 --lr 1e-3
run D --batch-size 32 --steps 900 --hard-negatives 4 --lr 2e-3
run E --batch-size 64 --steps 450 --hard-negatives 8 --lr 2e-3
run F --batch-size 16 --steps 1800 --hard-negatives 4 --lr 1e-3
run G --batch-size 64 --steps 450 --hard-negatives 1 --lr 2e-3
run H --batch-size 128 --steps 225 --hard-negatives 4 --lr 3e-3
TO=320 run L --batch-size 64 --steps 4000 --hard-negatives 4 --lr 2e-3
wait
