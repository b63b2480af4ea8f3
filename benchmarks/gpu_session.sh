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
# (carried as wheels: bm3d, bm4d and PyWavelets, installed to a folder put on PYTHONPATH).
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
SPEED=(--sizes 512 --iterations 30 --warmup 10)  # each measurement starts CUDA anew: ~18 s
if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu FIT=(--iterations 10) ONE=(--images 1 --crop 64) FMD=(--crop 64 --images 0)
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

# 1. One step of the paper network (s/iteration): a plain loop, the engine, and the engine
#    with one of its GPU habits off at a time (validation work in the step, cuDNN
#    autotuning, channels-last), to find what its extra 5 ms a step on the H200 are.
part speed 150 $PY benchmarks/speed.py --device $DEV "${SPEED[@]}" --repeats 1 \
    --variants plain,engine,engine-nostop,engine-nobench,engine-nchw,engine-nostop-nobench-nchw,engine-bf16 \
    --out "$W/speed-gpu.json"
# 2. Issue 9's GPU target: the paper preset (what `auto` picks on a GPU) on a 512² RGB
#    image to its automatically stopped result, and the same in bf16; a 512² grey image.
part ttr512 150 $PY benchmarks/time_to_result.py --data "$DATA" --device $DEV "${FIT[@]}" --sizes 512 --sigmas 25 \
    --colours RGB,grey --configs default,default+bf16 --out "$W/ttr-gpu-512.json"
# 3. Issue 11 on whole FMD images (512²): DIP with each noise model, auto stop and oracle.
#    BM3D and GAT+BM3D (no bm3d package there) run on the CPU with --no-dip; --merge joins them.
part fmd 230 $PY benchmarks/fmd.py --data "$DATA" "${FMD[@]}" "${FIT[@]}" --preset auto --device $DEV --no-bm3d \
    --variants dip_gaussian dip_pg_gat --out "$W/fmd-gpu-whole.json"
# 4. The rest of issue 9's table: 128² and 256², sigma 25 and 50, SR x4 and inpainting at 512².
part ttr_rest 150 $PY benchmarks/time_to_result.py --data "$DATA" --device $DEV "${FIT[@]}" --sizes 128,256 --sigmas 25,50 \
    --colours grey,RGB --configs default --out "$W/ttr-gpu-small.json"
part ttr_tasks 90 $PY benchmarks/time_to_result.py --data "$DATA" --device $DEV "${FIT[@]}" --sizes 512 --sigmas 50 \
    --colours RGB --tasks denoise,super-resolve,inpaint --configs default --out "$W/ttr-gpu-tasks.json"
# 5. CUDA graphs (compile's reduce-overhead mode; its compile time counts) at 512² RGB.
part graphs 120 $PY benchmarks/time_to_result.py --data "$DATA" --device $DEV "${FIT[@]}" --sizes 512 --sigmas 25 \
    --colours RGB --configs default+graphs --out "$W/ttr-gpu-graphs.json"
# 6. Whatever is left: the full-protocol quality benchmark, its cheapest sets first.
part quality_sr 120 $PY benchmarks/quality.py --data "$DATA" --tasks super-resolve --sets Set5 --device $DEV "${FIT[@]}" "${ONE[@]}" \
    --out "$W/quality-gpu-set5.json"
part quality_set12 300 $PY benchmarks/quality.py --data "$DATA" --tasks denoise --sets Set12 --sigmas 25 \
    --device $DEV "${FIT[@]}" "${ONE[@]}" --out "$W/quality-gpu-set12-s25.json"
echo "done at $(($(date +%s) - start)) s"
