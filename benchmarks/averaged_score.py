"""Does scoring the running average, not the single outputs, stop recorrupted fits nearer
their peak?

    python benchmarks/averaged_score.py --set12 0,1,2,3 --sigmas 25,50 --fmd Confocal_BPAE_G_1.png \
        --out benchmarks/results/averaged-score.json
    python benchmarks/averaged_score.py --replay benchmarks/results/averaged-score.json

A fit by recorruption scores each step's output ``f_k`` against that step's target
``t_k`` on the held-out pixels (the two have independent noise) and smooths the score with
weight ``w`` (0.99): ``S = EMA_w[(f_k - t_k)^2]``. The result it returns is the running
average of the outputs ``a = EMA_w[f_k]`` (the same weights). With the same weights,
exactly, ``EMA_w[(f_k - x)^2] = (a - x)^2 + EMA_w[(f_k - a)^2]``: the score measures the
average's error *plus the outputs' spread around it*, and that spread shrinks as the fit
settles. So ``S`` can go on falling after the average's error has turned, and the stop
comes late. ``S - (EMA_w[f_k^2] - a^2)`` removes the spread, and measures the average
(plus the target's noise, a constant).

Each case is fitted once with the engine's default settings for it (recorruption, the
``fast`` preset, a stop out of reach), recording both scores at every step and the PSNR
of the running average every 10; the default rule (0.2 % rise, patience 100, warm-up 200,
checks every 25) is then replayed on each score, and ``--rises`` on the averaged one.
Set12 crops carry Gaussian noise of ``--sigmas`` (seeds as in ``quality.py``, 8 bits); FMD
crops are real photon-limited images, fitted through the Anscombe transform.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def record_scores(stopping_module):
    """Wrap ``HeldOutPixels.update`` so every step also records the single-output score and
    the averaged one (a host sync per step: a study). Returns the list the rows go to."""
    rows = []
    update = stopping_module.HeldOutPixels.update
    moments = {}

    def recording(self, iteration, output, average, predicted, target=None):
        update(self, iteration, output, average, predicted, target)
        weight = self.config.smoothing if iteration > 1 else 0.0  # the engine's: the first step alone

        def held_mean(values):
            return (values * self.held).sum() / self.held_count

        def smooth(key, value):
            moments[key] = value if key not in moments else moments[key] * weight + value * (1 - weight)
            return moments[key]

        f = predicted.detach()
        # The control-variate score: (f - t)^2 - (y - t)^2 + 2 (y - a)(y - t), with y the
        # image, t this step's target (y - t is the fresh noise over alpha, known) and a
        # the average before this step (independent of this step's noise). Its
        # expectation differs from the score's by a constant; the terms it drops do not
        # depend on the fit, and repeat for every fit drawn with the same seed.
        control = float("nan")
        if target is not None:
            y, fresh = self.observation, self.observation - target
            before = moments.get("m1", f)
            control = float(smooth("control", held_mean((f - target) ** 2 - fresh**2 + 2 * (y - before) * fresh)))
        mean, mean_square = smooth("m1", f), smooth("m2", f * f)
        spread = held_mean(mean_square - mean**2)
        rows.append((iteration, float(self.smoothed), float(self.smoothed - spread), control))

    stopping_module.HeldOutPixels.update = recording
    return rows


def trace_case(observed, clean_score, iterations: int, run_out: bool = False, **settings) -> dict:
    """``run_out``: no stop at all (the whole budget, to see each way's peak); else the
    recorruption rule's rise test stops the fit, as the engine would."""
    from napari_dip.engine import stopping
    from napari_dip.engine.stopping import StoppingConfig
    from napari_dip.restore import iter_restore

    original = stopping.HeldOutPixels.update
    rows = record_scores(stopping)
    try:
        rule = StoppingConfig(rule="validation", patience=10**9, rise=None if run_out else 0.002, smoothing=0.99)
        psnrs = []
        start = time.perf_counter()
        for snap in iter_restore("denoise", observed, stopping=rule, iterations=iterations, snapshot_every=10,
                                 **settings):
            if not snap.done:
                psnrs.append((snap.iteration, clean_score(snap.average)))
        recorrupt_sigma = (snap.settings.get("fit") or {}).get("recorrupt_sigma")
    finally:
        stopping.HeldOutPixels.update = original
    return {"single": [(i, s) for i, s, _, _ in rows], "averaged": [(i, a) for i, _, a, _ in rows],
            "control": [(i, c) for i, _, _, c in rows], "psnr": psnrs,
            "seconds": time.perf_counter() - start, "recorrupt_sigma": recorrupt_sigma}


def replay(scores, rise=0.002, **rule):
    """(best iteration, stop iteration) of the engine's rule on a score trace: the
    recorruption rule's 0.2 % rise unless told otherwise (``fmd_trace.replay``)."""
    from fmd_trace import replay as replay_rule

    return replay_rule(scores, rise=rise, **rule)


def summarise(cases: dict, rises: list[float], alternative: str = "averaged", patience: int = 100) -> str:
    """The rule replayed on the engine's score and, at each of ``rises`` (and with
    ``patience``), on the ``alternative`` one (``averaged`` or ``control``); the mean row
    also gives the worst gap to the oracle."""
    lines = ["| case | oracle (dB) at | single score: stop, result (dB) | "
             + " | ".join(f"{alternative}, rise {r:g}: stop, result (dB)" for r in rises) + " |",
             "|---|---|---|" + "---|" * len(rises)]
    totals = {"single": [], **{r: [] for r in rises}}
    for name, case in cases.items():
        psnrs = dict(case["psnr"])

        def at(iteration):
            return psnrs[min(psnrs, key=lambda k: abs(k - iteration))]

        oracle_at = max(psnrs, key=psnrs.get)
        cells = []
        # No best (a trace shorter than the warm-up): the fit's last average is the result.
        best, stop = replay(case["single"])
        best = best or stop
        cells.append(f"{stop}, {at(best):.2f}")
        totals["single"].append((stop, at(best) - psnrs[oracle_at]))
        for rise in rises:
            best, stop = replay(case[alternative], rise=rise, patience=patience)
            best = best or stop
            cells.append(f"{stop}, {at(best):.2f}")
            totals[rise].append((stop, at(best) - psnrs[oracle_at]))
        lines.append(f"| {name} | {psnrs[oracle_at]:.2f} at {oracle_at} | " + " | ".join(cells) + " |")
    mean = ["| mean: stop, gap to the oracle (dB) (worst) | |"]
    for key in totals:
        stops, gaps = zip(*totals[key])
        mean.append(f" {np.mean(stops):.0f}, {np.mean(gaps):+.2f} ({min(gaps):+.2f}) |")
    return "\n".join(lines + ["".join(mean)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--set12", default="0,1,2,3", help="Set12 indices ('' for none)")
    parser.add_argument("--sigmas", default="25,50")
    parser.add_argument("--fmd", default="", help="comma-separated FMD file names")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=1500, help="Set12 fits (FMD: --fmd-iterations)")
    parser.add_argument("--fmd-iterations", type=int, default=900)
    parser.add_argument("--stack-frame", default="", metavar="FMD_IMAGE",
                        help="also the first frame of stacks.py's simulated stack of this FMD image: recorrupted and "
                             "the paper's way with noise='auto', and recorrupted with the Poisson-Gaussian model given")
    parser.add_argument("--stack-frames", type=int, default=1,
                        help="the frame's crop: that of a stack of this many frames (they drift one pixel a frame)")
    parser.add_argument("--gain", type=float, default=None,
                        help="give the Poisson-Gaussian model this gain and fit the frame both ways with it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rises", default="0.002,0.005,0.01")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--replay", type=Path, help="print the table of a saved run")
    parser.add_argument("--alternative", choices=("averaged", "control"), default="averaged",
                        help="the score replayed beside the engine's: the average's, or the control-variate one")
    parser.add_argument("--patience", type=int, default=100, help="the alternative score's patience when replayed")
    parser.add_argument("--run-out", action="store_true",
                        help="no stop in the fits (each runs its whole budget), so a later stop can be replayed too")
    options = parser.parse_args(argv)
    rises = [float(r) for r in options.rises.split(",")]
    if options.replay:
        print(summarise(json.loads(options.replay.read_text())["cases"], rises, options.alternative,
                        options.patience))
        return 0

    import torch

    torch.set_num_threads(options.threads)
    sys.path.insert(0, str(ROOT / "src"))
    import fmd
    import time_to_result

    quality = time_to_result._load_quality()
    cases = {}

    def save():
        if options.out:
            options.out.write_text(json.dumps({"command": " ".join(sys.argv), "cases": cases}))

    set12 = quality.list_images(options.data, "Set12", None)
    for index in [int(i) for i in options.set12.split(",") if i]:
        name, path = set12[index]
        clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), options.crop))
        for sigma in [float(s) for s in options.sigmas.split(",")]:
            noisy = quality.add_gaussian_noise(clean, sigma / 255, quality.image_seed(0, "Set12", name, sigma))
            noisy8 = np.round(noisy * 255).astype(np.uint8)
            case = f"Set12/{name} {options.crop}² σ{sigma:g}"
            cases[case] = trace_case(noisy8, lambda est, c=clean: quality.psnr(c, quality.to_unit(est)),
                                     options.iterations, run_out=options.run_out)
            print(case, f"{cases[case]['seconds']:.0f} s", flush=True)
            save()
    folder = options.data / "microscopy" / "FMD"
    for image in [i for i in options.fmd.split(",") if i]:
        raw = fmd.centre_crop(fmd.load_grey(folder / "raw" / image), options.crop)
        gt = fmd.centre_crop(fmd.load_grey(folder / "gt" / image), options.crop)
        case = f"FMD/{Path(image).stem} {options.crop}²"
        cases[case] = trace_case(raw, lambda est, g=gt: fmd.psnr(g, est), options.fmd_iterations,
                                 run_out=options.run_out, noise="poisson-gaussian", noise_fit="gat")
        print(case, f"{cases[case]['seconds']:.0f} s", flush=True)
        save()
    if options.stack_frame:
        # The first frame of stacks.py's simulated FMD stack (Poisson-Gaussian noise drawn
        # with the levels fitted to the real raw/gt pair, 8 bits), fitted by recorruption
        # and, for comparison, the paper's way.
        import stacks

        stack_options = argparse.Namespace(seed=0, data=str(options.data), fmd_image=options.stack_frame,
                                           frames=options.stack_frames, crop=options.crop, set12_image="05.png")
        name, (clean, noisy) = next(iter(stacks.build_stacks(stack_options).items()))
        # The model the frame was drawn from, given instead of chosen by noise="auto"
        # (with --gain, its gain too, as a stack's pooled estimate would give it).
        given = {"noise": "poisson-gaussian", "noise_fit": "gat",
                 **({"gain": options.gain} if options.gain else {})}
        if options.gain:
            ways = (("recorrupt, Poisson-Gaussian given", given),
                    ("paper's way, Poisson-Gaussian given", {**given, "recorrupt": False}))
        else:
            ways = (("recorrupt", {}), ("paper's way", {"recorrupt": False}),
                    ("recorrupt, Poisson-Gaussian given", given))
        for way, settings in ways:
            case = f"{name} frame 0 of {options.stack_frames}, {way}"
            cases[case] = trace_case(noisy[0], lambda est, c=clean[0]: stacks.psnr(c, est), options.fmd_iterations,
                                     run_out=True, **settings)
            print(case, f"{cases[case]['seconds']:.0f} s", flush=True)
            save()
    print(summarise(cases, rises, options.alternative, options.patience))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
