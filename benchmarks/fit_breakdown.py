"""Where a GPU fit's time goes: the cost before the steps settle, the steady cost of a step,
and what a second fit in the same process (a napari session's second Run) pays.

    PYTHONPATH=src python3 benchmarks/fit_breakdown.py --data .gpu-data --out fit-breakdown.json

``time_to_result.py`` starts a process per fit and reports one number, the wall time to
the stopped result. Here every fit runs in one process, one after the other, on the same
noisy image (a CSet9 image with Gaussian noise, rounded to 8 bits as in ``quality.py``),
with a snapshot every ``--every`` iterations; the device is synchronised at each
snapshot, so the snapshots' times split a fit into

* ``first_seconds``: from the call to the first snapshot (CUDA start-up in the first fit
  of the process, the noise estimate, cuDNN's kernel search for each new network, the
  CUDA graph's warm-up and capture, and the first ``--every`` steps), and
* ``ms_per_step``: the steady rate from the first snapshot to the stopped result (the
  stopping rule, the running average and all work outside the graph included).

Each ``--runs`` entry is ``PRESET[+recorrupt|+norecorrupt][+nographs][+noautotune][+bf16]``;
listing one twice measures it cold (first in the process, or first of its network) and
warm. ``+noautotune`` fits without cuDNN's kernel search, which the engine turns on for
every CUDA fit (``devices.autotune_convolutions``): it separates the search's share of the
first-fit cost from CUDA's own start-up, and shows what the search buys per step.
``+bf16`` runs the network in bfloat16 autocast (``precision="bfloat16"``): whether the
cheaper step holds the quality and the stop, beside the float32 fit of the same image.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_settings(run: str) -> tuple[dict, bool]:
    """``fast+recorrupt+nographs`` -> the keyword arguments of ``iter_restore``, and whether
    cuDNN may search for kernels (``+noautotune``: not)."""
    preset, *mods = run.split("+")
    known = {"recorrupt": {"recorrupt": True}, "norecorrupt": {"recorrupt": False}, "nographs": {"cuda_graphs": False},
             "noautotune": {}, "bf16": {"precision": "bfloat16"}}
    unknown = [m for m in mods if m not in known]
    if preset not in ("paper", "fast", "auto") or unknown:
        raise SystemExit(f"unknown run {run!r}: PRESET[+recorrupt|+norecorrupt][+nographs][+noautotune][+bf16]")
    settings = {"preset": preset}
    for mod in mods:
        settings.update(known[mod])
    return settings, "noautotune" not in mods


@contextlib.contextmanager
def autotuning(allowed: bool):
    """The engine's fits as they are, or with cuDNN's kernel search left off: the fit
    module's switch replaced by one that changes nothing (the engine has no setting for it)."""
    import torch

    from napari_dip.engine import fit as fit_module

    if allowed:
        yield
        return
    original = fit_module.autotune_convolutions
    before = torch.backends.cudnn.benchmark
    fit_module.autotune_convolutions = lambda device: None
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        fit_module.autotune_convolutions = original
        torch.backends.cudnn.benchmark = before


def timed_fit(noisy8: np.ndarray, clean: np.ndarray, quality, settings: dict, device: str, every: int,
              iterations: int | None) -> dict:
    import torch

    from napari_dip.restore import iter_restore

    cuda = device.startswith("cuda")
    marks = []
    start = time.perf_counter()
    final = None
    extra = {"iterations": iterations} if iterations else {}
    for final in iter_restore("denoise", noisy8, device=device, seed=0, snapshot_every=every, **settings, **extra):
        if cuda:
            torch.cuda.synchronize()
        marks.append((final.iteration, time.perf_counter() - start))
    seconds = marks[-1][1]
    (first_iteration, first_seconds) = marks[0]
    steps = final.iteration - first_iteration
    fit = final.settings.get("fit") or {}
    return {
        "seconds": seconds, "first_iteration": first_iteration, "first_seconds": first_seconds,
        "ms_per_step": 1000 * (seconds - first_seconds) / steps if steps else None,
        "iteration": final.iteration, "best_iteration": final.best_iteration, "stop_reason": final.stop_reason,
        "backtracks": final.backtracks, "psnr": quality.psnr(clean, quality.to_unit(final.average)),
        "preset": final.settings.get("preset"), "recorrupt_sigma": fit.get("recorrupt_sigma"),
        "cuda_graphs": final.settings.get("cuda_graphs"), "precision": fit.get("precision"),
        "network": (final.settings.get("network") or {}).get("channels_down"), "parameters": final.settings.get("network_parameters"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--image", default="F16", help="a CSet9 image's name (as quality.py names it)")
    parser.add_argument("--size", type=int, default=512, help="centre crop side")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--runs", default="fast,fast,fast+nographs,paper+recorrupt,paper+recorrupt")
    parser.add_argument("--every", type=int, default=100, help="a snapshot (and a device sync) every N iterations")
    parser.add_argument("--iterations", type=int, help="cap every fit's budget (to check the script on a CPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    runs = options.runs.split(",")
    for run in runs:
        run_settings(run)  # refuse a typo before the first fit

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time_to_result

    quality = time_to_result._load_quality()
    paths = dict(quality.list_images(Path(options.data), "CSet9", None))
    clean8 = quality.centre_crop(quality.load_uint8(paths[options.image]), options.size)
    clean = quality.to_unit(clean8)
    noisy = quality.add_gaussian_noise(clean, options.sigma / 255,
                                       quality.image_seed(options.seed, "CSet9", options.image, options.sigma))
    noisy8 = np.round(noisy * 255).astype(np.uint8)

    import torch

    machine = f"{platform.machine()}, torch {torch.__version__}"
    if options.device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name(0)}"
    rows = []
    for run in runs:
        settings, autotune = run_settings(run)
        with autotuning(autotune):
            row = {"run": run, **timed_fit(noisy8, clean, quality, settings, options.device, options.every,
                                           options.iterations)}
        rows.append(row)
        print(f"{run:28s} {row['seconds']:6.1f} s  first {row['first_iteration']} at {row['first_seconds']:5.1f} s  "
              f"then {row['ms_per_step'] or float('nan'):6.2f} ms/step  stop {row['iteration']} (best "
              f"{row['best_iteration']}, {row['stop_reason']})  {row['psnr']:.2f} dB  backtracks {row['backtracks']}  "
              f"graphs {row['cuda_graphs']}", flush=True)
        if options.out:  # after every fit: a run cut short keeps what it measured
            options.out.write_text(json.dumps({"date": str(date.today()), "machine": machine,
                                               "image": options.image, "size": options.size, "sigma": options.sigma,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
