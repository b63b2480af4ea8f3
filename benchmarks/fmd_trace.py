"""Trace one FMD crop's held-out validation error and PSNR, to choose the held-out block.

Fits the centre crop of one FMD ``*_1`` image without a stop (``patience`` out of reach),
recording the smoothed validation error every iteration and the PSNR of the running
average against the 50-frame mean every 10; ``--replay`` then says where the default rule
(0.3 % rise at least 25 iterations after the best, patience 100, checks every 25, warm-up
200) would have stopped on saved traces and what it would have returned.

    python benchmarks/fmd_trace.py WideField_BPAE_R_1.png --crop 256 --iterations 1600 --block auto --out traces/
    python benchmarks/fmd_trace.py --replay traces/*.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def trace(options) -> Path:
    from fmd import centre_crop, load_grey, psnr

    from napari_dip.engine import stopping
    from napari_dip.engine.stopping import StoppingConfig
    from napari_dip.restore import iter_restore

    folder = options.data / "microscopy" / "FMD"
    raw = centre_crop(load_grey(folder / "raw" / options.image), options.crop)
    gt = centre_crop(load_grey(folder / "gt" / options.image), options.crop)
    scores = []
    update = stopping.HeldOutPixels.update

    def recording(self, iteration, output, average, predicted, target=None):  # a host sync per step: a study
        update(self, iteration, output, average, predicted, target)
        scores.append((iteration, float(self.smoothed)))

    stopping.HeldOutPixels.update = recording
    block = None if options.block == "auto" else int(options.block)
    rule = StoppingConfig(rule="validation", patience=10**9, holdout_block=block)
    extra = {"noise_fit": "gat"} if options.noise == "poisson-gaussian" else {}
    start = time.perf_counter()
    psnrs = []
    # Through the Anscombe transform the fit (and its held-out score) sees the image in the
    # transformed domain, which weighs dark pixels more than PSNR does: the same error there.
    transformed = []
    noise = None
    for snap in iter_restore("denoise", raw, noise=options.noise, stopping=rule, iterations=options.iterations,
                             snapshot_every=10, **extra):
        noise = noise or (snap.settings or {}).get("noise")
        if not snap.done:
            psnrs.append((snap.iteration, psnr(gt, snap.average)))
            if noise and noise.get("model") == "poisson-gaussian":
                transformed.append((snap.iteration, transformed_error(gt, snap.average, noise)))
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / f"{Path(options.image).stem}-{options.crop}-b{options.block}-{options.noise}.json"
    path.write_text(json.dumps({"scores": scores, "psnr": psnrs, "transformed_error": transformed,
                                "seconds": time.perf_counter() - start, "held_out": snap.settings.get("held_out")}))
    best = max(psnrs, key=lambda row: row[1])
    print(f"{path}: oracle {best[1]:.2f} dB at {best[0]}")
    if transformed:
        lowest = min(transformed, key=lambda row: row[1])
        print(f"  lowest error in the transformed domain at {lowest[0]}; lowest held-out score at "
              f"{min(scores, key=lambda row: row[1])[0]}")
    return path


def transformed_error(clean, estimate, noise: dict) -> float:
    """Mean squared error of ``estimate`` against ``clean`` after the Anscombe transform
    with the fit's noise levels (``settings["noise"]``: ``var(v) = a (v - offset) + b`` in
    image units; the transform of ``v - offset`` with them is the one the fit used on its
    own scale)."""
    import numpy as np

    from napari_dip.noise import gat

    a, b, offset = noise["a"][0], noise["b"][0], noise.get("offset") or 0.0

    def transform(values):
        return gat(np.asarray(values, np.float64) - offset, a, b)

    return float(np.mean((transform(clean) - transform(estimate)) ** 2))


def replay(scores, rise=0.003, min_wait=25, patience=100, warmup=200, check=25):
    """(best iteration, stop iteration) of the default rule on a saved score trace."""
    best, best_at = math.inf, None
    for iteration, score in scores:
        if iteration < warmup:
            continue
        if score < best:
            best, best_at = score, iteration
        if iteration % check == 0 and best_at is not None:
            waited = iteration - best_at
            if waited >= patience or (waited >= min_wait and score > best * (1 + rise)):
                return best_at, iteration
    return best_at, scores[-1][0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an FMD file name, e.g. WideField_BPAE_R_1.png")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=1600)
    parser.add_argument("--block", default="auto", help="held-out block side, or auto (the engine's choice)")
    parser.add_argument("--noise", default="gaussian", choices=["gaussian", "poisson-gaussian"])
    parser.add_argument("--out", type=Path, default=Path("traces"))
    parser.add_argument("--replay", type=Path, nargs="+", help="saved traces: where the default rule stops")
    options = parser.parse_args(argv)
    if options.replay:
        for path in options.replay:
            saved = json.loads(path.read_text())
            psnrs = dict(saved["psnr"])
            best_at, stop = replay(saved["scores"])
            if best_at is None:
                print(f"{path.name}: no best, the trace ends inside the rule's 200-iteration warm-up")
                continue
            returned = psnrs[min(psnrs, key=lambda k: abs(k - best_at))]
            oracle_at = max(psnrs, key=psnrs.get)
            print(f"{path.name} {saved['held_out']}: best {best_at}, stop {stop}, returns ~{returned:.2f} dB; "
                  f"oracle {psnrs[oracle_at]:.2f} at {oracle_at}")
        return 0
    if not options.image:
        parser.error("name an FMD image, or --replay traces")
    trace(options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
