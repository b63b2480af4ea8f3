"""What ``noise="auto"`` decides on images whose answer is known, and on what evidence.

    python benchmarks/noise_choice.py                       # the table
    python benchmarks/noise_choice.py --out benchmarks/results/noise-choice.json

Cases, each an 8-bit image as a file would hold it:

* **photon counting, simulated**: ``a * Poisson(clean / a)`` on FMD ground truths (``a`` = 4,
  no read noise) and the first frames of ``stacks.py``'s simulated stack (its own fitted
  ``a``). They are Poisson by construction, and dark: many pixels are true zero counts;
* **FMD raw crops** (real confocal, two-photon and wide-field acquisitions; 128² and 256²);
* **Gaussian**: Set12 photographs and scikit-image's ``camera``, ``coins``, ``moon`` and
  ``page`` with Gaussian noise of sigma 10, 25 and 50 (Set12) or 10 and 25, clipped at 0
  and 255.

For each case: the decision, the number of intensity bins the decision's fit (the
smoothest quarter of each bin) kept, and the slope ``a`` of the all-blocks fit in
standard errors with the ratio of the bright end's variance to the dark end's. The
estimator drops a bin when more than 1 % of its blocks touch the image's extreme value
(taken for a clipping level when over 0.1 % of the pixels sit on it); in a dark
photon-counting image the extreme is 0, a true count, and most dark bins go.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def build_cases(data: Path, seed: int = 0) -> dict:
    """``name -> (expected, image)``; expected is ``poisson-gaussian``, ``gaussian`` or ``?``."""
    import fmd
    import skimage.data
    import stacks

    rng = np.random.default_rng(seed)
    cases = {}
    folder = data / "microscopy" / "FMD"
    for image in ("Confocal_BPAE_G_1.png", "TwoPhoton_MICE_1.png", "Confocal_FISH_1.png"):
        gt = fmd.centre_crop(fmd.load_grey(folder / "gt" / image), 128).astype(np.float64)
        counts = np.clip(np.round(4.0 * rng.poisson(gt / 4.0)), 0, 255).astype(np.uint8)
        cases[f"photon counting, a=4: {Path(image).stem} 128²"] = ("poisson-gaussian", counts)
    for frames in (1, 16):
        options = argparse.Namespace(seed=seed, data=str(data), fmd_image="Confocal_BPAE_B_1.png", frames=frames,
                                     crop=128, set12_image="05.png")
        name, (_, noisy) = next(iter(stacks.build_stacks(options).items()))
        cases[f"stacks.py {name.split(' (')[0]} ({frames} frames) frame 0"] = ("poisson-gaussian", noisy[0])
    for path in sorted((folder / "raw").glob("*_1.png")):
        for crop in (128, 256):
            raw = fmd.centre_crop(fmd.load_grey(path), crop)
            gt = fmd.centre_crop(fmd.load_grey(folder / "gt" / path.name), crop)
            # The noise levels measured against the 50-frame mean, to check the estimate by.
            cases[f"FMD raw {path.stem} {crop}²"] = ("?", raw, stacks.poisson_gaussian_fit(
                raw.astype(np.float64), gt.astype(np.float64)))
    for path in sorted((data / "denoise" / "Set12").glob("*.png")):
        clean = fmd.load_grey(path).astype(np.float64)
        for sigma in (10, 25, 50):
            noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
            cases[f"Set12 {path.stem} σ{sigma}"] = ("gaussian", noisy)
    for name in ("camera", "coins", "moon", "page"):
        clean = getattr(skimage.data, name)().astype(np.float64)
        for sigma in (10, 25):
            noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
            cases[f"skimage {name} σ{sigma}"] = ("gaussian", noisy)
    return cases


def evidence(image: np.ndarray, measured: tuple[float, float] | None = None) -> dict:
    """The decision and its evidence; with ``measured`` ``(a, b)`` (from the ground truth),
    also how far the estimate's noise deviation is from it, at the image's mean and at its
    99th percentile (mean relative error)."""
    from napari_dip.noise import choose_noise_model, estimate_noise_levels

    levels = estimate_noise_levels(image)
    dark = levels.a * levels.low + levels.b
    bright = levels.a * levels.high + levels.b
    deviation_error = None
    if measured is not None:
        values = image.astype(np.float64)
        errors = [abs(np.sqrt(max(levels.a * x + levels.b, 1e-12)) / np.sqrt(max(measured[0] * x + measured[1], 1e-12))
                      - 1) for x in (values.mean(), np.quantile(values, 0.99))]
        deviation_error = float(np.mean(errors))
    return {
        "choice": choose_noise_model(levels),
        "decision_bins": levels.smooth.bins if levels.smooth is not None else None,
        "bins": levels.bins,
        "a": levels.a, "b": levels.b,
        "slope_in_standard_errors": levels.a / levels.a_error if levels.a_error > 0 else None,
        "bright_to_dark": bright / dark if dark > 0 else None,
        "zero_fraction": float((image == image.min()).mean()),
        "deviation_error": deviation_error,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-clipped", type=float, default=None,
                        help="try another bin rule: drop a bin when more than this fraction of its blocks touch a "
                             "clipping level (the estimator's MAX_CLIPPED_FRACTION, 0.01)")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from napari_dip import noise

    rule_before = noise.MAX_CLIPPED_FRACTION
    if options.max_clipped is not None:
        noise.MAX_CLIPPED_FRACTION = options.max_clipped
    try:
        return _report(options, noise.MAX_CLIPPED_FRACTION)
    finally:
        noise.MAX_CLIPPED_FRACTION = rule_before


def _report(options, max_clipped: float) -> int:
    rows = {}
    print(f"bin rule: at most {100 * max_clipped:g} % of a bin's blocks touching a clipping level\n")
    print("| case | expected | decision | bins kept (decision's fit / all) | all-blocks slope (s.e.) | "
          "bright / dark variance | pixels at the minimum | noise deviation off the measured |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    wrong = 0
    deviation_errors = []
    for name, (expected, image, *measured) in build_cases(options.data, options.seed).items():
        row = {"expected": expected, **evidence(image, measured[0] if measured else None)}
        if row["deviation_error"] is not None:
            deviation_errors.append(row["deviation_error"])
        rows[name] = row
        miss = expected != "?" and row["choice"] != expected
        wrong += miss
        slope, ratio, off = row["slope_in_standard_errors"], row["bright_to_dark"], row["deviation_error"]
        cells = [name, expected, row["choice"] + (" **(wrong)**" if miss else ""),
                 f"{row['decision_bins']} / {row['bins']}", "" if slope is None else f"{slope:.1f}",
                 "" if ratio is None else f"{ratio:.2f}", f"{100 * row['zero_fraction']:.1f} %",
                 "" if off is None else f"{100 * off:.1f} %"]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{wrong} of {sum(r['expected'] != '?' for r in rows.values())} cases with a known answer decided wrongly")
    if deviation_errors:
        print(f"noise deviation of the FMD raw crops off the one measured against the 50-frame mean: "
              f"{100 * np.mean(deviation_errors):.1f} % on the mean, {100 * np.max(deviation_errors):.1f} % at worst")
    if options.out:
        options.out.write_text(json.dumps({"command": " ".join(sys.argv), "max_clipped_fraction": max_clipped,
                                           "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
