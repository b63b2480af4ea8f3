#!/usr/bin/env bash
# The GPU benchmarks of issues 9 and 11 in one lease of a GPU machine, most wanted first.
#
#   python3 -m pip install -q --no-index --no-deps .whl/*.whl     # bm3d, bm4d, PyWavelets (see below)
#   DATA=.gpu-data BUDGET=540 bash benchmarks/gpu_session.sh     # on the GPU machine, from the repo root
#
# What one lease taught (H200, 2026-11-26; benchmarks/results/gpu-h200-2026-11-26): install
# the carried wheels into the machine's environment, not a --target folder (the fits'
# child processes must import PyWavelets too); a paper-preset fit of a 512² image takes
# about 50-60 s there (17-19 ms a step, 3000 steps when the stop does not fire), so the 12
# whole FMD images with two noise models need about 20 minutes: more than one lease.
#
# A lent GPU comes with minutes, not hours, so the parts run in order of how much their
# figures are wanted, each under its own cap and all under BUDGET seconds: a part that
# would start with under 20 s left is skipped and says so, and one that runs past its cap
# is stopped (the scripts write their JSON after every case or image, so what it measured
# is kept). Everything lands in $OUT; after each part it is packed into
# $OUT/gpu-results.tar.gz (the device tool brings back few files).
#
# PARTS="fmd graphs" runs only the parts named (a second call on a machine still warm).
# SMOKE=1 runs every part on the CPU for a few iterations on small crops: a check of the
# script itself, before a lease is spent on it.
#
# DATA is a copy of ../shared/data inside the checkout (git-ignored: the folder beside the
# checkout does not travel to the GPU machine). Runs from a checkout without installing
# (PYTHONPATH=src), with the machine's own torch; BM3D where the bm3d package is importable
# (carried as wheels: bm3d, bm4d and PyWavelets, installed into the machine's environment).
set -u
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/napari-dip-gpu}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT/work"
W=$OUT/work
start=$(date +%s)
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# compile/CUDA-graph fits keep inductor's kernels here (platformdirs may be missing there).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/napari-dip-inductor}
PY=${PY:-python3}
DEV=cuda
FIT=()     # extra options of every fitting script (the smoke run's short budgets)
ONE=()     # quality.py: how many images per set
FMD=(--crop 0)
FMD_IMAGES=2,3,4,5,6,7,8,9,10,11,0,1
# The BM3D processes keep off the cores the GPU fits' Python runs on, where there are enough.
PIN=""
if [ "$(nproc)" -ge 8 ] && command -v taskset >/dev/null; then PIN="taskset -c 4-$(($(nproc) - 1))"; fi
BM3D_HALVES=(2,3,4,5,6 7,8,9,10,11)
SPEED=(--sizes 512 --iterations 30 --warmup 10)  # each measurement starts CUDA anew: ~18 s
if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu FIT=(--iterations 10) ONE=(--images 1 --crop 64) FMD=(--crop 64) FMD_IMAGES=0 BM3D_HALVES=(0)
    SPEED=(--sizes 64 --iterations 2 --warmup 1)
fi

part() {
    local name=$1 cap=$2
    shift 2
    if [ -n "${PARTS:-}" ] && [[ " $PARTS " != *" $name "* ]]; then
        return
    fi
    local left=$((BUDGET - ($(date +%s) - start)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        echo "== $name skipped: ${left} s of the budget left"
        return
    fi
    echo "== $name (at most $limit s)"
    timeout -s TERM -k 15 "$limit" "$@" >"$W/$name.log" 2>&1
    echo "== $name exit $? at $(($(date +%s) - start)) s"
    tail -n 25 "$W/$name.log"
    tar -czf "$OUT/gpu-results.tar.gz" -C "$OUT" work
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    $PY -c "import torch, numpy, skimage; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0), 'numpy', numpy.__version__, 'skimage', skimage.__version__)"
} >"$W/machine.txt" 2>&1
cat "$W/machine.txt"

# 1. One step of the paper network at 512² (s/iteration): a plain loop, the engine, and the
#    engine with the whole step captured as a CUDA graph (float32, bf16, and without
#    channels-last).
part speed 110 $PY benchmarks/speed.py --device $DEV "${SPEED[@]}" --repeats 1 \
    --variants plain,engine,engine-graphs,engine-graphs-bf16,engine-graphs-nchw \
    --out "$W/speed-gpu.json"
# 2. Issue 9's GPU target: the paper preset (what `auto` picks on a GPU) on a 512² RGB
#    image to its automatically stopped result, eager and with CUDA graphs, in one run.
part ttr512 130 $PY benchmarks/time_to_result.py --data "$DATA" --device $DEV "${FIT[@]}" --sizes 512 --sigmas 25 \
    --colours RGB --configs default,default+graphs --out "$W/ttr-gpu-512.json"
# 3. Issue 11 on whole FMD images (512²): DIP with the default noise model (what `auto`
#    picks), with CUDA graphs, on the ten images the first lease did not reach, then the two
#    it did (eager then) for a comparison. BM3D and GAT+BM3D run beside it on the machine's
#    CPU cores (two processes, half the images each); --merge joins them afterwards.
if [ -z "${PARTS:-}" ] || [[ " $PARTS " == *" fmd "* ]]; then
    for half in "${BM3D_HALVES[@]}"; do
        (timeout -s TERM 400 $PIN $PY benchmarks/fmd.py --data "$DATA" "${FMD[@]}" --images "$half" \
            --no-dip --out "$W/fmd-whole-bm3d-${half//,/_}.json" >"$W/fmd-bm3d-${half//,/_}.log" 2>&1 &)
    done
fi
part fmd 250 $PY benchmarks/fmd.py --data "$DATA" "${FMD[@]}" "${FIT[@]}" --images "${FMD_IMAGES}" --preset auto \
    --device $DEV --no-bm3d --cuda-graphs --variants dip_default --out "$W/fmd-gpu-whole-graphs.json"
sleep 2
tar -czf "$OUT/gpu-results.tar.gz" -C "$OUT" work
echo "done at $(($(date +%s) - start)) s"
