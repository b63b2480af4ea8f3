"""Warm start across the planes of a stack: per-frame PSNR and seconds, independent fits
against warm-started ones, in one run.

    python benchmarks/stacks.py --frames 16 --crop 128 --out benchmarks/results/stacks-cpu.json

Two drifting time-lapses with known ground truth are built in memory (nothing is written to
the data folder):

* **FMD**: a crop of the 50-frame average (``gt/``) of a real fluorescence image, shifted by
  one pixel per frame, each frame with independent Poisson-Gaussian noise whose parameters
  (``variance = a * signal + b``, 8-bit units) are fitted to the image's own raw/gt pair;
* **Set12**: the same drift on a Set12 photograph with Gaussian noise (sigma 25);
* **SR** (only when ``--stacks`` names it): the same photograph's drifting frames as the
  high-resolution truth, each shrunk by ``--factor`` with PIL's Lanczos filter (as
  ``quality.py`` makes its low-resolution images), to be super-resolved back; the drift is a
  quarter of a low-resolution pixel per frame at x4;
* **INPAINT** (only when ``--stacks`` names it): the same photograph's drifting frames with
  half their pixels missing, a new random half in every frame, to be inpainted.

Each stack is restored twice with :func:`napari_dip.restore.iter_restore_planes`: every
frame fitted from scratch (``warm_start=False``), and frames after the first started from
the previous frame's network (``warm_start=True``). Fits run one after the other in this
process with the same thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # quality.py, for the SR stack
DATA = ROOT / ".." / "shared" / "data"


def load_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float64)


def poisson_gaussian_fit(raw: np.ndarray, clean: np.ndarray, bins: int = 32) -> tuple[float, float]:
    """``(a, b)`` of ``var(raw - clean) = a * clean + b``: least squares over intensity bins."""
    edges = np.quantile(clean, np.linspace(0, 1, bins + 1))
    means, variances = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (clean >= low) & (clean < high)
        if inside.sum() > 100:
            means.append(clean[inside].mean())
            variances.append((raw[inside] - clean[inside]).var())
    a, b = np.polyfit(means, variances, 1)
    return max(float(a), 1e-3), max(float(b), 0.0)


def drifting_frames(clean: np.ndarray, frames: int, crop: int, back_and_forth: bool = False,
                    drift: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray]:
    """``frames`` crops of ``clean`` whose window moves ``drift`` pixels (down, right) per
    frame, one and one by default, so the picture in them moves the other way (up, left);
    with ``back_and_forth``, there and back in turn (offsets 0, 1, 0, 1, ... times the
    drift). A fraction of a pixel is moved by cubic-spline interpolation
    (:func:`scipy.ndimage.shift`), as a stage or a sample drifts."""
    from scipy import ndimage

    height, width = clean.shape
    dy, dx = drift
    reach_y, reach_x = int(np.ceil(abs(dy) * (frames - 1))) + 1, int(np.ceil(abs(dx) * (frames - 1))) + 1
    top, left = (height - crop - reach_y) // 2, (width - crop - reach_x) // 2
    # A negative drift starts at the far side, so every frame stays inside the image.
    top, left = top + (reach_y if dy < 0 else 0), left + (reach_x if dx < 0 else 0)
    steps = [k % 2 if back_and_forth else k for k in range(frames)]
    rows = [top + int(np.floor(dy * k)) for k in steps]
    columns = [left + int(np.floor(dx * k)) for k in steps]
    if min(rows) < 0 or min(columns) < 0 or max(rows) + crop > height or max(columns) + crop > width:
        raise ValueError(f"{frames} frames of {crop} px drifting {dy:g},{dx:g} px a frame do not fit in "
                         f"a {height}x{width} picture")
    # Room around a fractional shift: the spline's prefilter reaches further, but what it
    # takes from beyond this (edge values repeated) changes the border by a fraction of a grey level.
    margin = 3
    padded = np.pad(clean, margin, mode="edge")
    out = []
    for k, y, x in zip(steps, rows, columns):
        # What is left of the shift once the whole pixels are cropped off: in [0, 1).
        fy, fx = dy * k - (y - top), dx * k - (x - left)
        if not fy and not fx:  # whole pixels: a plain crop
            out.append(clean[y : y + crop, x : x + crop])
            continue
        window = padded[y : y + crop + 2 * margin, x : x + crop + 2 * margin].astype(np.float64)
        window = ndimage.shift(window, (-fy, -fx), order=3, mode="nearest")
        out.append(window[margin : margin + crop, margin : margin + crop])
    return out


def _drift(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"a drift is DY,DX pixels per frame, got {text!r}")
    return float(parts[0]), float(parts[1])


def build_stacks(options) -> dict:
    rng = np.random.default_rng(options.seed)
    stacks = {}
    data = Path(options.data)
    gt = load_grey(data / "microscopy/FMD/gt" / options.fmd_image)
    raw = load_grey(data / "microscopy/FMD/raw" / options.fmd_image)
    a, b = poisson_gaussian_fit(raw, gt)
    drift = getattr(options, "drift", (1.0, 1.0))
    clean = drifting_frames(gt, options.frames, options.crop, drift=drift)
    noisy = [a * rng.poisson(np.clip(c, 0, None) / a) + rng.normal(0, np.sqrt(b), c.shape) for c in clean]
    stacks[f"FMD {options.fmd_image} (a={a:.2f}, b={b:.1f})"] = (np.stack(clean), np.stack(noisy))
    photo = load_grey(data / "denoise/Set12" / options.set12_image)
    clean = drifting_frames(photo, options.frames, options.crop, getattr(options, "back_and_forth", False), drift)
    noisy = [c + rng.normal(0, 25.0, c.shape) for c in clean]
    stacks[f"Set12 {options.set12_image} (sigma 25)"] = (np.stack(clean), np.stack(noisy))
    built = {name: (c, np.clip(np.round(n), 0, 255).astype(np.uint8), "denoise") for name, (c, n) in stacks.items()}
    if "SR" in options.stacks.split(","):
        from quality import make_lr  # the low-resolution images of quality.py's protocol
        high = [np.round(c).astype(np.uint8) for c in clean]
        built[f"SR {options.set12_image} (x{options.factor})"] = (
            np.stack(high).astype(np.float64), np.stack([make_lr(h, options.factor) for h in high]), "super-resolve")
    if "INPAINT" in options.stacks.split(","):
        high = np.stack([np.round(c).astype(np.uint8) for c in clean])
        holes = np.random.default_rng(options.seed + 1).random(high.shape) < 0.5
        built[f"INPAINT {options.set12_image} (50 % missing)"] = (
            high.astype(np.float64), np.where(holes, 0, high).astype(np.uint8), "inpaint", {"mask": holes})
    return built


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    error = np.mean((clean.astype(np.float64) - estimate.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def restore(stack: np.ndarray, warm: bool, options, task: str = "denoise", given: dict | None = None) -> list[dict]:
    from napari_dip.restore import iter_restore_planes

    variant = contextlib.nullcontext()
    if warm and getattr(options, "warm_from", "previous") == "first":
        variant = warm_from_first_plane()
    elif warm and getattr(options, "warm_roll_input", None):
        variant = warm_input_rolled(options.warm_roll_input)
    with variant:
        rows, start = [], time.perf_counter()
        # Denoising's options; super-resolution takes the factor (and fits the paper's way).
        # Inpainting takes its mask (``given``).
        extra = ({"factor": options.factor} if task == "super-resolve" else
                 dict(given or {}) if task == "inpaint" else {"recorrupt": options.recorrupt})
        planes = iter_restore_planes(task, stack, axes="TYX", warm_start=warm, preset=options.preset,
                                     snapshot_every=None, seed=options.seed, device=options.device,
                                     iterations=options.iterations, channels=options.channels, **extra)
        for index, snapshot in planes:
            if snapshot.done:
                now = time.perf_counter()
                fit = snapshot.settings.get("fit") or {}
                rows.append({"frame": int(index[0]), "seconds": now - start, "iterations": snapshot.iteration,
                             "best_iteration": snapshot.best_iteration, "stop_reason": snapshot.stop_reason,
                             "recorrupted": bool(fit.get("recorrupt_sigma")), "adam_beta2": fit.get("adam_beta2"),
                             # The plane's own rate: a warm plane's says which warm factor ran.
                             "learning_rate": fit.get("learning_rate"), "backtracks": snapshot.backtracks,
                             "restarted": bool(snapshot.settings.get("warm_start_restarted")),
                             "drift": (snapshot.settings.get("drift") or {}).get("pixels"),
                             "result": snapshot.average})
                start = now
        return rows


@contextlib.contextmanager
def _handed_on_states(change):
    """Within this, the state a fitted plane hands the next warm-started plane is
    ``change(state)`` (benchmark variants of the engine's warm start, not engine options)."""
    from napari_dip.engine.fit import Fitter

    export = Fitter.export_state
    Fitter.export_state = lambda fitter: change(export(fitter))
    try:
        yield
    finally:
        Fitter.export_state = export


def warm_input_rolled(shift: str):
    """The input a warm-started plane inherits rolled by ``shift`` ("DY,DX" pixels of the
    network's input; ``--warm-roll-input``, a diagnostic). Meant to move the fixed noise
    input with a drifting picture, as a recorrupted fit's input (the plane itself) moves; it
    does not, as measured: the strided network is shift-equivariant only in steps of
    2 ** scales pixels (BENCHMARKS.md)."""
    import torch

    dy, dx = (int(v) for v in shift.split(","))

    def rolled(state):
        state.input = torch.roll(state.input, shifts=(dy, dx), dims=(-2, -1))
        return state

    return _handed_on_states(rolled)


def warm_from_first_plane():
    """Every warm-started plane starts from the first fitted plane's network instead of the
    previous plane's (``--warm-from first``): the states handed on after the first are the
    first's. A warm fit copies the state in and leaves it as it was, so one serves all."""
    first = []

    def first_state(state):
        if not first:
            first.append(state)
        return first[0]

    return _handed_on_states(first_state)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:  # 0 would have read as "not given" and fitted the default budget unseen
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--drift", type=_drift, default=(1.0, 1.0), metavar="DY,DX",
                        help="pixels the field of view moves per frame, down and right (the picture moves the "
                             "other way), fractions allowed (default 1,1)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--fmd-image", default="Confocal_BPAE_B_1.png")
    parser.add_argument("--set12-image", default="05.png")
    parser.add_argument("--stacks", default="FMD,Set12",
                        help="which stacks, comma-separated: FMD, Set12, SR (super-resolution of Set12's frames), "
                             "INPAINT (Set12's frames with half their pixels missing)")
    parser.add_argument("--factor", type=int, default=4, help="the SR stack's factor (default 4)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--channels", type=int, help="network width (default: the preset's)")
    parser.add_argument("--iterations", type=int, help="budget of the first plane (default: the preset's; for smoke runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-iterations", type=_at_least_one,
                        help="budget of a warm-started plane (default: presets.WARM_START_ITERATIONS)")
    parser.add_argument("--warm-lr-factor", type=float,
                        help="learning rate of a warm-started plane relative to the first (default: presets': "
                             "0.5 since 2026-11-28, 0.1 before)")
    parser.add_argument("--warm-average-weight", type=float,
                        help="running-average weight of a warm-started plane (default: presets')")
    parser.add_argument("--warm-check-every", type=int,
                        help="iterations between stop checks of a warm-started plane (default: presets')")
    parser.add_argument("--warm-min-wait", type=int,
                        help="trend test's wait after the best on a warm-started plane (default: presets')")
    parser.add_argument("--warm-max-drift", type=float, metavar="PIXELS",
                        help="a warm chain starts afresh on a plane drifted more than this from its first plane "
                             "(default: presets.WARM_START_MAX_DRIFT; inf: never, as before 2026-11-28)")
    parser.add_argument("--warm-from", choices=("previous", "first"), default="previous",
                        help="which fitted plane a warm-started plane starts from: the previous one (the "
                             "engine's way) or always the first")
    parser.add_argument("--back-and-forth", action="store_true",
                        help="the Set12 and SR frames move one pixel there and back in turn instead of drifting on")
    parser.add_argument("--warm-roll-input", metavar="DY,DX",
                        help="roll the input a warm plane inherits by this many pixels (a diagnostic: the "
                             "drifting frames move by -1,-1 at full resolution)")
    parser.add_argument("--recorrupt", action=argparse.BooleanOptionalAction, default=None,
                        help="fit by recorruption, or not (default: as the preset does; --preset paper "
                             "--recorrupt is what auto fits with on a CUDA GPU)")
    parser.add_argument("--fits", default="independent,warm", help="which to run: independent, warm or both")
    parser.add_argument("--out", type=Path)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.warm_from == "first" and options.warm_roll_input:
        parser.error("--warm-from first and --warm-roll-input are separate variants: give one")
    from napari_dip.engine import presets

    if options.warm_iterations:
        presets.WARM_START_ITERATIONS = options.warm_iterations
    if options.warm_average_weight is not None:
        presets.WARM_START_AVERAGE_WEIGHT = options.warm_average_weight
    if options.warm_lr_factor:
        presets.WARM_START_LR_FACTOR = options.warm_lr_factor
    if options.warm_check_every:
        presets.WARM_START_CHECK_EVERY = options.warm_check_every
    if options.warm_min_wait is not None:
        presets.WARM_START_MIN_WAIT = options.warm_min_wait
    if options.warm_max_drift is not None:
        presets.WARM_START_MAX_DRIFT = options.warm_max_drift
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)

    results = {}
    for name, (clean, noisy, task, *given) in build_stacks(options).items():
        if name.split()[0] not in options.stacks.split(","):
            continue
        results[name] = {}
        for warm in [w == "warm" for w in options.fits.split(",")]:
            label = "independent" if not warm else (
                "warm start" if options.warm_from == "previous" else "warm start from the first frame")
            if warm and options.warm_roll_input:
                label += f", input rolled {options.warm_roll_input}"
            if warm and options.warm_max_drift is not None:
                label += f", afresh beyond {options.warm_max_drift:g} px"
            rows = restore(noisy, warm, options, task, given[0] if given else None)
            for row in rows:
                row["psnr"] = psnr(clean[row["frame"]], row.pop("result"))
                # The input's own PSNR; for SR the low-resolution frame enlarged by pixel repetition.
                observed = noisy[row["frame"]]
                if task == "super-resolve":
                    observed = np.kron(observed, np.ones((options.factor, options.factor)))
                row["noisy_psnr"] = psnr(clean[row["frame"]], observed)
            results[name][label] = rows
            print(f"{name:40s} {label:12s} " + " ".join(f"{r['psnr']:.2f}/{r['seconds']:.0f}s{'*' if r['restarted'] else ''}"
                                                         for r in rows), flush=True)
            write(options, results)  # after every stack's fits: a run cut short keeps what it measured

    how = {None: "", True: ", by recorruption", False: ", the paper's way"}[options.recorrupt]
    dy, dx = options.drift
    print(f"\nwarm start over a drifting stack (the view {dy:g} px down, {dx:g} px right a frame), {options.frames} frames of "
          f"{options.crop}², preset {options.preset}{how}; "
          f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores")
    print("| stack | fits | frame 1 s | later frames s (mean) | later / first | mean PSNR (dB) | noisy PSNR |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, by_label in results.items():
        for label, rows in by_label.items():
            first, later = rows[0]["seconds"], np.mean([r["seconds"] for r in rows[1:]]) if len(rows) > 1 else float("nan")
            print(f"| {name} | {label} | {first:.1f} | {later:.1f} | {later / first:.0%} | "
                  f"{np.mean([r['psnr'] for r in rows]):.2f} | {np.mean([r['noisy_psnr'] for r in rows]):.2f} |")
    return 0


def write(options, results: dict) -> None:
    if options.out:
        options.out.write_text(json.dumps({"date": str(date.today()), "command": " ".join(sys.argv),
                                           "options": {k: str(v) for k, v in vars(options).items()},
                                           "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
