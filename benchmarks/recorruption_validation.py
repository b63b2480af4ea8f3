"""Where the held-out validation of a recorrupted fit bottoms out, against where its PSNR peaks.

    python benchmarks/recorruption_validation.py --cases 2:50,0:50,0:25,3:25 --out benchmarks/results/recorruption-validation.json
    python benchmarks/recorruption_validation.py --from-json benchmarks/results/recorruption-validation.json

A plain loop like ``recorruption_trace.py``'s, with the engine's pieces: the ``fast``
recorruption network (``FAST_RECORRUPT``), the noise level the engine estimates and its
alpha, Adam at 0.01, the running average at 0.99, and 5 % of the pixels left out of the
loss (drawn once). Each case (``index:sigma`` of a Set12 centre crop, noise as in
``time_to_result.py``) is fitted twice with the same seeds, scoring the held-out pixels
two ways:

* ``fill``: the engine up to ``6f574c4``. The held-out pixels are hidden from the input
  (replaced by the mean of their 8 neighbours) and the running average is scored against
  the noisy image there, smoothed at 0.9;
* ``own-target``: the engine from ``6f574c4``. The input is the whole image and each
  step's output is scored against that step's recorrupted target there, smoothed at 0.99.

Every 25 iterations it records the running average's PSNR and the smoothed score; it
prints the PSNR peak, the score's minimum after iteration 200 and the PSNR there, and,
replaying the engine's trend test on the recorded points (stop once the score is
``--rises`` above its best, at least 25 iterations after it), where that stops and what it
returns. ``--from-json`` prints that again from a saved run, without fitting.

``--stopped RISES`` instead runs the engine itself on each case, as a user would
(``iter_restore``, ``fast``, seed 0, its automatic stop with the presets' recorruption
stopping at each rise given), and prints the result's PSNR, the iteration it came from,
where the fit stopped and its seconds:

    python benchmarks/recorruption_validation.py --stopped 0.005,0.002 --cases 4:25,5:25,1:50,6:50
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def hidden_input(image, train_weight):
    """``image`` with each pixel left out of the loss replaced by the mean of the kept pixels
    in the 3 x 3 window around it (what the engine fed the network up to ``6f574c4``)."""
    import torch

    pool = lambda t: torch.nn.functional.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)  # noqa: E731
    total, count = pool(image * train_weight), pool(train_weight)
    return torch.where(train_weight > 0, image, total / count.clamp_min(1e-12))


def replay(rows, rise=0.005, warmup=200, min_wait=25):
    """The trend test on ``(iteration, psnr, score)`` points: ``(stop, best iteration, psnr)``."""
    best = stop = None
    for iteration, psnr, score in rows:
        if iteration < warmup:
            continue
        if best is None or score < best[2]:
            best = (iteration, psnr, score)
        elif iteration - best[0] >= min_wait and score > best[2] * (1 + rise):
            stop = iteration
            break
    return stop, best[0], best[1]


def report(label, sigma, variant, rows, rises) -> None:
    peak = max(rows, key=lambda row: row[1])
    lowest = min((row for row in rows if row[0] >= 200), key=lambda row: row[2])
    stops = "; ".join("rise {:g} %: stops at {}, returns {} ({:.2f} dB)".format(100 * rise, *replay(rows, rise))
                      for rise in rises)
    print(f"{label} (σ estimate {sigma:.3f}) {variant:10s}: PSNR peak {peak[1]:.2f} dB at {peak[0]}; "
          f"score lowest at {lowest[0]} ({lowest[1]:.2f} dB); {stops}", flush=True)


def trace(quality, clean, y, sigma, alpha, held, variant, iterations):
    import torch

    from napari_dip.engine.networks import FAST_RECORRUPT, SkipNet

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    network = SkipNet(replace(FAST_RECORRUPT, input_channels=1), 1)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    train = 1 - held
    base = hidden_input(y, train) if variant == "fill" else y
    smoothing = 0.9 if variant == "fill" else 0.99
    average = smoothed = None
    rows = []
    for iteration in range(1, iterations + 1):
        fresh = sigma * torch.randn(y.shape, generator=generator)
        output = network(base + alpha * fresh)
        target = y - fresh / alpha
        loss = (((output - target) ** 2) * train).sum() / train.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            output = output.detach()
            average = output.clone() if average is None else average.mul_(0.99).add_(output, alpha=0.01)
            scored, against = (average, y) if variant == "fill" else (output, target)
            error = (((scored - against) ** 2) * held).sum() / held.sum()
            smoothed = error if smoothed is None else smoothing * smoothed + (1 - smoothing) * error
        if iteration % 25 == 0:
            psnr = float(quality.psnr(clean, average[0, 0].numpy().astype(np.float64)))
            rows.append([iteration, round(psnr, 3), float(smoothed)])
    return rows


def stopped_fits(options, rises) -> None:
    import time

    from recorruption_trace import noisy_crop

    from napari_dip.engine.presets import RECORRUPTION_STOPPING
    from napari_dip.restore import iter_restore

    for rise in rises:
        for case in options.cases.split(","):
            index, sigma_255 = int(case.split(":")[0]), float(case.split(":")[1])
            crop = argparse.Namespace(data=options.data, set="Set12", image=index, size=options.size,
                                      sigma=sigma_255, threads=options.threads)
            quality, name, clean, y = noisy_crop(crop)
            noisy8 = np.round(y[0, 0].numpy().astype(np.float64) * 255).astype(np.uint8)
            start = time.perf_counter()
            for final in iter_restore("denoise", noisy8, preset="fast", device="cpu", seed=0, snapshot_every=None,
                                      stopping=replace(RECORRUPTION_STOPPING, rise=rise)):
                pass
            print(f"rise {100 * rise:g} %: Set12/{name} {options.size}² σ{sigma_255:g}: "
                  f"{quality.psnr(clean, quality.to_unit(final.average)):.2f} dB, best {final.best_iteration}, "
                  f"stopped at {final.iteration}, {time.perf_counter() - start:.1f} s", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cases", default="2:50,0:50,0:25,3:25", help="index:sigma of Set12 crops")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=1300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rises", default="0.005,0.002", help="trend tests to replay")
    parser.add_argument("--from-json", type=Path, help="report a saved run instead of fitting")
    parser.add_argument("--stopped", metavar="RISES", help="the engine's stopped fits at these rises instead")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    rises = [float(r) for r in options.rises.split(",")]
    if options.from_json:
        for label, result in json.loads(options.from_json.read_text())["results"].items():
            for variant in ("fill", "own-target"):
                report(label, result["sigma_estimate"], variant, result[variant], rises)
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from recorruption_trace import noisy_crop

    from napari_dip.engine.presets import recorruption_alpha
    from napari_dip.restore import estimate_noise

    if options.stopped:
        stopped_fits(options, [float(r) for r in options.stopped.split(",")])
        return 0
    results = {}
    for case in options.cases.split(","):
        index, sigma_255 = int(case.split(":")[0]), float(case.split(":")[1])
        crop = argparse.Namespace(data=options.data, set="Set12", image=index, size=options.size, sigma=sigma_255,
                                  threads=options.threads)
        quality, name, clean, y = noisy_crop(crop)
        sigma = estimate_noise(y[0].numpy())
        alpha = recorruption_alpha(sigma)
        held = (torch.rand(y.shape[2:], generator=torch.Generator().manual_seed(3)) < 0.05).float()[None, None]
        label = f"Set12/{name} {options.size}² σ{sigma_255:g}"
        results[label] = {"sigma_estimate": sigma, "alpha": alpha}
        for variant in ("fill", "own-target"):
            rows = trace(quality, clean, y, sigma, alpha, held, variant, options.iterations)
            results[label][variant] = rows
            report(label, sigma, variant, rows, rises)
    if options.out:
        options.out.write_text(json.dumps({"command": " ".join(["benchmarks/recorruption_validation.py", *(argv or sys.argv[1:])]),
                                           "machine": "x86_64, 2 cores", "torch": torch.__version__,
                                           "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
