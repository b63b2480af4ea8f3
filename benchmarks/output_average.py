"""How soon each way of averaging a fit's outputs reaches its quality: the running average
the engine used until ``f9330c8`` against averages that forget the first outputs sooner.

    python benchmarks/output_average.py --tasks super-resolve --images 2 --iterations 800 --checks 200,300,400,500,600,700,800
    python benchmarks/output_average.py --tasks denoise --images 2 --iterations 1000

Until ``f9330c8`` the engine returned (and showed) an exponential average of the network's
outputs, weight 0.99 (``FitConfig.average_weight``), started from the first output: after
``t`` steps that first output, made by a random network, still weighed ``0.99 ** t`` (5 % at
300). Since then it corrects the average for its start (``debiased`` below). Each case
of ``benchmarks/stopping.py`` (same images, degradations and metrics) is fitted once with
``fast``'s settings and no automatic stop (denoising by recorruption at the true sigma, as
the engine does by default), every step's raw output is kept, and these averages are
replayed on them:

* ``uncorrected``: the running average as the engine computed it before ``f9330c8``
  (``benchmarks/results/output-average-cpu-128-*.json``, written before, call it ``engine``);
* ``debiased``: the same weights, started from zero and divided by ``1 - 0.99 ** t``
  (Adam's correction, what the engine now returns), so that early on it is the plain mean
  of the outputs so far;
* ``window8``: a weight of ``min(0.99, 1 - 8 / t)``, about the last eighth of the fit;
* ``raw``: the last output alone.

The table gives each one's PSNR at ``--checks`` iterations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _stopping_study():
    """``benchmarks/stopping.py``, whose cases (images, degradations, metrics) this uses."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import stopping

    return stopping


def averages(outputs, weight: float = 0.99):
    """Yield ``(iteration, {name: average})`` after every output of ``outputs`` (arrays)."""
    uncorrected = debiased = window = None
    total = 0.0
    for t, output in enumerate(outputs, start=1):
        uncorrected = output.copy() if uncorrected is None else weight * uncorrected + (1 - weight) * output
        debiased = (1 - weight) * output if debiased is None else weight * debiased + (1 - weight) * output
        total = weight * total + (1 - weight)
        recent = min(weight, max(0.0, 1 - 8 / t))
        window = output.copy() if window is None else recent * window + (1 - recent) * output
        yield t, {"uncorrected": uncorrected, "debiased": debiased / total, "window8": window, "raw": output}


def record(task, observed, kwargs, iterations: int, seed: int, sigma: float | None):
    """Every step's raw output of a ``fast`` fit with no automatic stop, and the layout."""
    from napari_dip.arrays import prepare_image
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    chw, layout, alpha = prepare_image(observed)
    model = forward_model_for(task, layout, **kwargs)
    net, fit = settings_for(task, "fast", factor=kwargs.get("factor"), stopping="none", iterations=iterations,
                            seed=seed, noise_sigma=sigma if task == "denoise" else None)
    outputs = [snap.output for snap in Fitter(chw, model, net, fit).run(snapshot_every=1)]
    return outputs, layout, alpha


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="super-resolve")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--sigma", type=float, default=25.0, help="denoising: Gaussian noise (of 255)")
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--checks", help="iterations to report (default: every 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    study = _stopping_study()  # puts src/ on the path
    from napari_dip.arrays import restore_layout

    checks = ([int(c) for c in args.checks.split(",")] if args.checks
              else list(range(100, args.iterations + 1, 100)))
    options = argparse.Namespace(data=str(study.quality.DEFAULT_DATA), seed=args.seed, tasks=args.tasks.split(","),
                                 sigmas=[args.sigma], images=args.images, skip=args.skip, crop=args.crop,
                                 factor=args.factor)
    rows = []
    for task, name, observed, kwargs, evaluate in study.cases(options):
        outputs, layout, alpha = record(task, observed, kwargs, args.iterations, args.seed, args.sigma / 255)
        psnrs: dict[str, dict[int, float]] = {}
        for t, found in averages(outputs):
            if t in checks:
                for kind, image in found.items():
                    psnrs.setdefault(kind, {})[t] = float(evaluate(restore_layout(image, layout, alpha)))
        rows.append({"task": task, "image": name, "psnr": psnrs})
        print(f"{task} {name}")
        for kind, values in psnrs.items():
            print(f"  {kind:9s} " + " ".join(f"{t}:{v:.2f}" for t, v in values.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"options": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
