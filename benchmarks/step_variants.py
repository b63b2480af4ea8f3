"""Seconds per engine step on a GPU for memory layout x CUDA graphs x precision, in one process.

    PYTHONPATH=src python3 benchmarks/step_variants.py --sizes 256,512 --out step-variants.json

``speed.py`` starts a process per measurement (CUDA start-up and cuDNN autotuning cost
about 18 s each on an H200); here every variant runs in one process after the others, so a
lease measures a dozen in under a minute. Each row also says whether the step really was
replayed as a CUDA graph (``settings["cuda_graphs"]`` and the number of captures): a capture
that fails falls back to eager steps with only a warning.

``--compile`` times the network through ``torch.compile`` (inductor's default mode, which
fuses the normalisations and activations that dominate the 512² step) beside the eager
one, NCHW, with and without CUDA graphs, float32 and bf16. The row's ``first_seconds`` are
the warm-up steps. They hold the compile only in the first compiled row of each precision:
later rows in the same process reuse its code (a second compile of the same network took
0.02 s on the CPU), or its kernels from ``TORCHINDUCTOR_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def measure(size: int, channels_last: bool, graphs: bool, precision: str, warmup: int, iterations: int,
            device: str = "cuda", slice_ops: bool = False, network: str = "paper", compile: bool = False) -> dict:
    import torch

    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.networks import NETWORK_PRESETS, RECORRUPTION_NETWORKS
    from napari_dip.engine.stopping import StoppingConfig

    target = np.random.default_rng(0).uniform(0, 1, (3, size, size)).astype(np.float32)
    config = FitConfig(iterations=warmup + iterations, device=device, seed=0, channels_last=channels_last,
                       cuda_graphs=graphs, precision=precision, compile=compile,
                       stopping=StoppingConfig(rule="validation"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # The recorruption network (the CPU default for denoising), timed here on a noise input.
    config_of = {"paper": NETWORK_PRESETS["paper"]["default"], "recorruption": RECORRUPTION_NETWORKS["fast"]}
    fitter = Fitter(target, Identity(), replace(config_of[network], slice_ops=slice_ops), config)
    marks = {0: time.perf_counter()}
    for snap in fitter.run(snapshot_every=warmup):
        if cuda:
            torch.cuda.synchronize()
        marks[snap.iteration] = time.perf_counter()
    return {
        "size": size, "channels_last": channels_last, "graphs": graphs, "precision": precision,
        "slice_ops": slice_ops, "network": network, "compiled": fitter.compiled,
        "seconds_per_iteration": (marks[warmup + iterations] - marks[warmup]) / iterations,
        "first_seconds": marks[warmup] - marks[0],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "cuda_graphs_setting": fitter.settings["cuda_graphs"],
        "captures": fitter.graph_captures if fitter.graphs else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--device", default="cuda", help="cuda (what it is for), or cpu to check the script")
    parser.add_argument("--slice-ops", action="store_true",
                        help="NCHW only, each variant with PyTorch's padding and upsampling and with the network's "
                        "slice_ops (engine/slice_ops.py)")
    parser.add_argument("--compile", action="store_true",
                        help="NCHW only, each variant eager and through torch.compile (its warm-up holds the compile)")
    parser.add_argument("--network", choices=("paper", "recorruption"), default="paper")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    import torch

    rows = []
    for size in [int(s) for s in options.sizes.split(",")]:
        layouts = (False,) if options.slice_ops or options.compile else (False, True)
        slicing = (False, True) if options.slice_ops else (False,)
        compiling = (False, True) if options.compile else (False,)
        for channels_last, graphs, precision, slice_ops, compile_ in itertools.product(
                layouts, (False, True), ("float32", "bfloat16"), slicing, compiling):
            row = measure(size, channels_last, graphs, precision, options.warmup, options.iterations, options.device,
                          slice_ops, options.network, compile_)
            rows.append(row)
            print(f"{size}² {'channels-last' if channels_last else 'NCHW':13s} graphs={str(graphs):5s} "
                  f"{precision:8s} {'slice ops' if slice_ops else 'torch ops'} "
                  f"{'compiled' if row['compiled'] else 'eager'} "
                  f"{row['seconds_per_iteration'] * 1000:6.2f} ms/step (warm-up {row['first_seconds']:.1f} s) "
                  f"{row['peak_gib']:5.2f} GiB  graphs used: {row['cuda_graphs_setting']} "
                  f"(captures {row['captures']})", flush=True)
            if options.out:
                options.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0) if options.device.startswith("cuda") else "cpu", "torch": torch.__version__,
                                                   "date": time.strftime("%Y-%m-%dT%H:%M%z"), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
