"""Quality benchmark: napari-dip against classical baselines and the published DIP numbers.

One command runs each task on the standard test sets and prints, per set, the mean PSNR
and SSIM of the DIP result at the end of the budget ("final"), of the best snapshot in
hindsight ("oracle", not available in practice: it needs the ground truth), the gap
between them, the baselines of the same run, and the published reference numbers of
``../shared/data/README.md`` next to them.

Protocols (defaults are the full paper protocol; run them on a GPU):

* denoising -- CSet9 (colour) and Set12 (grey); additive Gaussian noise sigma = 25 and 50
  (of 255) from a fixed seed, clipped to [0, 1] (the DIP protocol), then rounded to 8 bits
  (``--noisy-input uint8``, the default): every method gets that same image. The DIP code
  keeps the noisy image float (``--noisy-input float``), but the engine rescales float
  input per channel from its own [min, max] -- not the identity when a noisy channel does
  not reach both 0 and 1 (e.g. the red channel of a Baboon crop starts at 0.18) -- while
  uint8 is mapped exactly (value / 255). The rounding error has a std of 1/(255 sqrt 12),
  about 0.0011, against sigma = 0.098 or 0.196.
  PSNR/SSIM over all channels, data range 1. Baselines: ``skimage`` non-local means with
  the known sigma (``h = 0.8 sigma``, 5x5 patches in a 13x13 window for sigma <= 25, 7x7
  in 19x19 above), TV (Chambolle, ``weight = 0.75 sigma``, chosen on scikit-image's
  camera/astronaut/coffee samples, not on the test sets) and BM3D when the optional
  ``bm3d`` package is importable.
* super-resolution -- Set5 and Set14 at x4 (``--factors 4,8`` adds x8). The HR ground
  truth is centre-cropped to a multiple of the factor; the LR input is PIL's Lanczos
  resize of it. PSNR/SSIM on the BT.601 Y channel (``rgb2ycbcr / 255``) of a centre crop
  shaved by 4 px. Baselines: PIL bicubic and Lanczos upscaling of the same LR image.
* inpainting -- Heide11 with a 50 % random mask (exactly half the pixels, fixed seed) and
  with the paper's own masked inputs (``*_masked.png``; the holes are the pixels equal to
  0, so pixels that are genuinely 0 in the ground truth count as holes too). Baseline:
  ``skimage.restoration.inpaint_biharmonic``.

Every DIP budget fit runs with the engine's automatic stopping off and keeps the PSNR
curve over its snapshots. Unless ``--auto-stop off``, a second fit with the same seed and
the engine's automatic stopping (its default rule for the task, or ``--auto-stop RULE``)
gives the "DIP automatically stopped" row: the rule sees no ground truth, only its result
is scored. A run is recorded as a plain dict (:func:`new_record`) whose ``"methods"`` maps
a method key to its metrics; the tables show whatever methods the records hold (known ones
in :data:`METHOD_LABELS` order, then any others), so another variant is one more entry.

CPU subset used for BENCHMARKS.md (about 22 minutes on one core)::

    python benchmarks/quality.py --preset fast --images 2 --crop 96 --iterations 1000 \
        --snapshot-every 50 --auto-stop off --threads 1 --device cpu \
        --out benchmarks/results/quality-cpu.json

Run ``python benchmarks/quality.py --help`` for all options.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data"

TASKS = ("denoise", "super-resolve", "inpaint")
SETS = {
    "denoise": ("CSet9", "Set12"),
    "super-resolve": ("Set5", "Set14"),
    "inpaint": ("Heide11",),
}
SET_FOLDERS = {
    "CSet9": "denoise/CSet9",
    "Set12": "denoise/Set12",
    "Set5": "sr/Set5",
    "Set14": "sr/Set14",
    "Heide11": "inpaint/Heide11",
}
SHAVE = 4  # pixels shaved off each border before the SR metrics
INPAINT_FRACTION = 0.5
MIN_LR_SIDE = 16  # napari_dip.arrays.MIN_SIDE: the smallest image side the engine takes

#: Table rows, in this order; methods a record holds that are not listed come after.
METHOD_LABELS = {
    "input": "input (noisy / masked)",
    "dip_final": "DIP final (average, end of budget)",
    "dip_oracle": "DIP oracle (best snapshot)",
    "dip_last_output": "DIP last output (no average)",
    "dip_auto": "DIP automatically stopped",
    "bm3d": "BM3D",
    "nlm": "NL-means (skimage)",
    "tv": "TV Chambolle (skimage)",
    "bicubic": "bicubic (PIL)",
    "lanczos": "Lanczos (PIL)",
    "biharmonic": "biharmonic (skimage)",
}

# -- published reference numbers (../shared/data/README.md) ----------------------------
# Full images, full paper protocol; keyed by (task, set, setting) then by method key.

PUBLISHED: dict[tuple[str, str, str], dict[str, str]] = {
    ("denoise", "CSet9", "sigma25"): {
        "dip_final": "30.43 (paper, exp. average); 29.22 (paper, 1800 it., no average); 31.29 (published images)",
        "bm3d": "31.42 (CBM3D, paper); 31.70 (bm3d 4.0.3)",
        "nlm": "30.26 (paper); 29.18 (skimage denoise_nl_means)",
    },
    ("denoise", "CSet9", "sigma50"): {
        "dip_final": "27.69 (published images)",
        "bm3d": "27.78 (CBM3D, paper); 28.91 (bm3d 4.0.3)",
    },
    ("denoise", "Set12", "sigma25"): {
        "bm3d": "29.98 (bm3d 4.0.3)",
        "nlm": "28.43",
        "tv": "28.06 (best weight)",
    },
    ("denoise", "Set12", "sigma50"): {
        "bm3d": "26.73 (bm3d 4.0.3)",
        "nlm": "24.77",
        "tv": "24.97 (best weight)",
    },
    ("super-resolve", "Set5", "x4"): {
        "dip_final": "29.90 (paper); TV prior 28.86; SRResNet (trained) 32.10",
        "bicubic": "28.43 (paper)",
    },
    ("super-resolve", "Set14", "x4"): {
        "dip_final": "27.00 (paper); TV prior 26.42; SRResNet (trained) 28.53",
        "bicubic": "26.05 (paper)",
    },
    ("super-resolve", "Set5", "x8"): {"dip_final": "25.89 (paper)", "bicubic": "24.37 (paper)"},
    ("super-resolve", "Set14", "x8"): {"dip_final": "24.15 (paper)", "bicubic": "23.10 (paper)"},
    ("inpaint", "Heide11", "published-masks"): {
        "dip_final": "33.48 (paper, Table 1); conv. sparse coding 31.19",
    },
    ("inpaint", "Heide11", "random50"): {
        "dip_final": "33.48 (paper, Table 1, its own masks)",
        "biharmonic": "31.78 (skimage, 8 of the 11 images, 50 % random masks)",
    },
}

#: Published per-image DIP PSNR (full images), keyed by (task, set, setting) then image name.
PUBLISHED_PER_IMAGE: dict[tuple[str, str, str], dict[str, float]] = {
    ("denoise", "CSet9", "sigma25"): {
        "F16": 33.69, "Baboon": 24.51, "kodim01": 28.44, "kodim02": 32.71, "kodim03": 33.79,
        "kodim12": 32.68, "Lena": 32.56, "Peppers": 31.15,
    },
    ("super-resolve", "Set5", "x4"): {"baby": 31.49, "bird": 31.80, "butterfly": 26.23, "head": 31.04, "woman": 28.93},
}
_HEIDE11_DIP = {
    "barbara": 32.22, "boat": 33.06, "house": 39.16, "Lena512": 36.16, "peppers256": 33.05, "Cameraman256": 29.8,
    "couple": 32.52, "fingerprint": 32.84, "hill": 32.77, "man": 32.20, "montage": 34.54,
}
PUBLISHED_PER_IMAGE[("inpaint", "Heide11", "published-masks")] = _HEIDE11_DIP
PUBLISHED_PER_IMAGE[("inpaint", "Heide11", "random50")] = _HEIDE11_DIP


# -- image helpers -----------------------------------------------------------------------


def load_uint8(path: Path) -> np.ndarray:
    """An 8-bit image as ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8."""
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK") else "L")
        return np.asarray(image).copy()


def centre_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """Centre crop of side ``size`` (each side at most the image's own); ``None`` keeps all."""
    if size is None:
        return image
    height, width = image.shape[:2]
    h, w = min(size, height), min(size, width)
    top, left = (height - h) // 2, (width - w) // 2
    return image[top : top + h, left : left + w]


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """Centre crop so that both sides are multiples of ``factor``."""
    height, width = image.shape[:2]
    h, w = height - height % factor, width - width % factor
    top, left = (height - h) // 2, (width - w) // 2
    return image[top : top + h, left : left + w]


def image_seed(seed: int, *parts) -> np.random.Generator:
    """A generator fixed by the run's seed and a description of the image and setting."""
    key = zlib.crc32("/".join(str(p) for p in parts).encode())
    return np.random.default_rng([seed, key])


def add_gaussian_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(clean + N(0, sigma^2), 0, 1)`` as float32, ``clean`` and ``sigma`` in [0, 1] units."""
    noisy = clean.astype(np.float64) + rng.normal(0.0, sigma, clean.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def random_mask(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean holes (True = missing) covering exactly ``round(fraction * pixels)`` pixels."""
    count = int(round(fraction * shape[0] * shape[1]))
    holes = np.zeros(shape[0] * shape[1], dtype=bool)
    holes[rng.permutation(holes.size)[:count]] = True
    return holes.reshape(shape)


def pil_resize(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize a uint8 image to ``(width, height)`` with PIL (``"lanczos"`` or ``"bicubic"``)."""
    resample = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC}[method]
    return np.asarray(Image.fromarray(image).resize(size, resample))


def make_lr(hr: np.ndarray, factor: int) -> np.ndarray:
    """The low-resolution input: PIL Lanczos downscale of an HR image whose sides divide by ``factor``."""
    height, width = hr.shape[:2]
    if height % factor or width % factor:
        raise ValueError(f"HR size {height}x{width} is not a multiple of {factor}")
    return pil_resize(hr, (width // factor, height // factor), "lanczos")


# -- metrics -------------------------------------------------------------------------------


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of float images in [0, 1] (data range 1), over all pixels and channels."""
    error = np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(1.0 / error))


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM (scikit-image defaults, data range 1); channels-last colour is averaged over channels."""
    from skimage.metrics import structural_similarity

    reference = np.asarray(reference, np.float64)
    channel_axis = -1 if reference.ndim == 3 else None
    return float(structural_similarity(reference, np.asarray(estimate, np.float64), data_range=1.0,
                                       channel_axis=channel_axis))


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB in [0, 1], in [16, 235] / 255; a grey image is taken as R = G = B."""
    from skimage.color import rgb2ycbcr

    rgb = np.asarray(rgb, np.float64)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    return rgb2ycbcr(rgb)[..., 0] / 255.0


def shave(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def metrics_y(reference_rgb: np.ndarray, estimate_rgb: np.ndarray, border: int = SHAVE) -> dict:
    """PSNR and SSIM on the Y channel of the centre crop shaved by ``border`` pixels."""
    ref = shave(y_channel(reference_rgb), border)
    est = shave(y_channel(estimate_rgb), border)
    return {"psnr": psnr(ref, est), "ssim": ssim(ref, est)}


def metrics(reference: np.ndarray, estimate: np.ndarray) -> dict:
    return {"psnr": psnr(reference, estimate), "ssim": ssim(reference, estimate)}


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 to float64 in [0, 1]; floats are taken as already in [0, 1]."""
    image = np.asarray(image)
    return image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


# -- runs ----------------------------------------------------------------------------------


def new_record(task: str, set_name: str, setting: str, image: str, **extra) -> dict:
    """The per-run record: identification plus ``methods`` (method key -> metrics dict)."""
    return {"task": task, "set": set_name, "setting": setting, "image": image, **extra, "methods": {}}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _fit(task, observed, options, stopping, **task_kwargs):
    from napari_dip.restore import iter_restore

    return iter_restore(
        task,
        observed,
        preset=options.preset,
        snapshot_every=options.snapshot_every,
        iterations=options.iterations,
        channels=options.channels,
        reg_noise_std=options.jitter,
        seed=options.seed,
        device=options.device,
        stopping=stopping,
        **task_kwargs,
    )


def run_dip(task: str, observed: np.ndarray, evaluate, options, **task_kwargs) -> tuple[dict, dict]:
    """Fit DIP, scoring every snapshot's averaged output with ``evaluate(array) -> {psnr, ssim}``.

    The budget fit runs with automatic stopping off (``stopping="none"``): its last snapshot
    is the average after every iteration. Returns ``(methods, info)``: ``methods`` holds
    ``dip_final``, ``dip_oracle``, ``dip_last_output`` and, unless ``--auto-stop off``,
    ``dip_auto`` from a second fit (same seed) with the engine's automatic stopping;
    ``info`` the curve, timings and the settings used.
    """
    snapshots = _fit(task, observed, options, "none", **task_kwargs)
    curve = []
    best = None
    scoring = 0.0  # seconds spent scoring while the fit was paused (left out of its time)
    last = None
    start = time.perf_counter()
    for snap in snapshots:
        t0 = time.perf_counter()
        score = evaluate(snap.average)
        curve.append({"iteration": snap.iteration, "loss": snap.loss, "psnr": score["psnr"]})
        if best is None or score["psnr"] > best[1]["psnr"]:
            best = (snap.iteration, score)
        if snap.done:
            final_score = score
            last_output_score = evaluate(snap.output)
        else:
            scoring += time.perf_counter() - t0
        last = snap
    wall = time.perf_counter() - start
    fit_seconds = last.elapsed - scoring
    common = {"iteration": last.iteration, "seconds": fit_seconds}
    methods = {
        "dip_final": {**final_score, **common, "stop_reason": last.stop_reason},
        "dip_oracle": {**best[1], "iteration": best[0], "seconds": fit_seconds},
        "dip_last_output": {**last_output_score, **common},
    }
    settings = last.settings
    if options.auto_stop != "off":
        methods["dip_auto"] = run_auto_stop(task, observed, evaluate, options, **task_kwargs)
    info = {
        "curve": curve,
        "fit_seconds": fit_seconds,
        "wall_seconds": wall,
        "iterations": last.iteration,
        "backtracks": last.backtracks,
        "settings": {
            "preset": options.preset,
            "fit": settings.get("fit"),
            "network_parameters": settings.get("network_parameters"),
            "device": settings.get("device"),
            "forward_model": settings.get("forward_model"),
        },
    }
    return methods, info


def run_auto_stop(task, observed, evaluate, options, **task_kwargs) -> dict:
    """A fit with automatic stopping (the task's default rule, or ``--auto-stop RULE``): its result."""
    rule = None if options.auto_stop == "default" else options.auto_stop
    if options.holdout is not None:
        from dataclasses import replace

        from napari_dip.engine.presets import stopping_for

        rule = replace(stopping_for(task, rule), holdout_fraction=options.holdout)
    last = None
    for last in _fit(task, observed, options, rule, **task_kwargs):
        pass  # no scoring on the way: the rule must not see the ground truth, and neither do we
    fit = (last.settings or {}).get("fit", {})
    return {
        **evaluate(last.average),
        "iteration": getattr(last, "best_iteration", None) or last.iteration,  # where the result comes from
        "stopped_at": last.iteration,
        "stop_reason": last.stop_reason,
        "rule": (fit.get("stopping") or {}).get("rule") if isinstance(fit.get("stopping"), dict) else rule,
        "seconds": last.elapsed,
    }


def exact_range(image: np.ndarray) -> bool:
    """True when a float image's every channel spans exactly [0, 1].

    The engine rescales float inputs per channel from their own [min, max] to [0, 1]; only
    then is that rescaling the identity (the DIP protocol fits the noisy image as it is).
    """
    values = image.reshape(-1, image.shape[-1]) if image.ndim == 3 else image.reshape(-1, 1)
    return bool(np.all(values.min(axis=0) == 0.0) and np.all(values.max(axis=0) == 1.0))


def list_images(data: Path, set_name: str, limit: int | None) -> list[tuple[str, Path]]:
    folder = data / SET_FOLDERS[set_name]
    if not folder.is_dir():
        raise FileNotFoundError(f"no {set_name} images under {folder} (see --data)")
    if set_name in ("CSet9", "Set12"):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
        names = [_denoise_name(p.stem) for p in paths]
    else:
        paths = sorted(folder.glob("*_GT.png"))
        names = [p.stem[: -len("_GT")] for p in paths]
    images = list(zip(names, paths))
    return images[:limit] if limit else images


def _denoise_name(stem: str) -> str:
    """``image_F16_512rgb`` -> ``F16``, ``image_Baboon512rgb`` -> ``Baboon``; others unchanged."""
    if not stem.startswith("image_"):
        return stem
    return re.sub(r"_?\d*rgb$", "", stem[len("image_") :])


def denoise_baselines(clean, noisy, sigma: float) -> dict:
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, estimate_sigma

    channel_axis = -1 if noisy.ndim == 3 else None
    noisy64 = noisy.astype(np.float64)
    methods = {}
    patch, distance = (5, 6) if sigma <= 25 / 255 + 1e-9 else (7, 9)
    try:  # for the record only; it needs the optional PyWavelets
        estimated = float(np.mean(estimate_sigma(noisy64, channel_axis=channel_axis)))
    except ImportError:
        estimated = None
    out, seconds = timed(denoise_nl_means, noisy64, h=0.8 * sigma, sigma=sigma, patch_size=patch,
                         patch_distance=distance, fast_mode=True, channel_axis=channel_axis)
    methods["nlm"] = {**metrics(clean, out), "seconds": seconds, "sigma_estimated": estimated}
    out, seconds = timed(denoise_tv_chambolle, noisy64, weight=0.75 * sigma, channel_axis=channel_axis)
    methods["tv"] = {**metrics(clean, out), "seconds": seconds, "weight": 0.75 * sigma}
    try:
        import bm3d  # optional, not a dependency
    except ImportError:
        pass
    else:
        if noisy.ndim == 3:
            out, seconds = timed(bm3d.bm3d_rgb, noisy64, sigma)
        else:
            out, seconds = timed(bm3d.bm3d, noisy64, sigma)
        methods["bm3d"] = {**metrics(clean, np.clip(out, 0, 1)), "seconds": seconds}
    return methods


def bench_denoise(set_name: str, options, log) -> list[dict]:
    records = []
    for sigma255 in options.sigmas:
        sigma = sigma255 / 255.0
        setting = f"sigma{sigma255:g}"
        for name, path in list_images(options.data, set_name, options.images):
            if ("denoise", set_name, setting, name) in getattr(options, "finished", ()):
                continue
            clean8 = centre_crop(load_uint8(path), options.crop)
            clean = clean8 / 255.0
            noisy = add_gaussian_noise(clean, sigma, image_seed(options.seed, set_name, name, setting))
            if options.noisy_input == "uint8":
                # What every method sees, DIP included: the engine takes uint8 as value / 255.
                noisy_for_dip = np.rint(noisy * 255.0).astype(np.uint8)
                noisy = (noisy_for_dip / 255.0).astype(np.float32)
            else:
                noisy_for_dip = noisy
            record = new_record("denoise", set_name, setting, name, shape=list(clean8.shape),
                                noisy_input=options.noisy_input,
                                input_range_exact=options.noisy_input == "uint8" or exact_range(noisy))
            record["methods"]["input"] = metrics(clean, noisy)
            record["methods"].update(denoise_baselines(clean, noisy, sigma))
            channel_axis = -1 if noisy.ndim == 3 else None
            methods, info = run_dip("denoise", noisy_for_dip, lambda out: metrics(clean, to_unit(out)), options,
                                    channel_axis=channel_axis)
            record["methods"].update(methods)
            record["dip"] = info
            records.append(record)
            log(record)
    return records


def bench_super_resolve(set_name: str, options, log) -> list[dict]:
    records = []
    for factor in options.factors:
        setting = f"x{factor}"
        for name, path in list_images(options.data, set_name, options.images):
            if ("super-resolve", set_name, setting, name) in getattr(options, "finished", ()):
                continue
            # The engine needs an LR side of at least MIN_LR_SIDE: small crops grow to allow it.
            crop = None if options.crop is None else max(options.crop, MIN_LR_SIDE * factor)
            hr8 = crop_to_multiple(centre_crop(load_uint8(path), crop), factor)
            lr8 = make_lr(hr8, factor)
            hr = hr8 / 255.0
            size = (hr8.shape[1], hr8.shape[0])
            record = new_record("super-resolve", set_name, setting, name, shape=list(hr8.shape),
                                lr_shape=list(lr8.shape))
            for method in ("bicubic", "lanczos"):
                up, seconds = timed(pil_resize, lr8, size, method)
                record["methods"][method] = {**metrics_y(hr, up / 255.0), "seconds": seconds}
            channel_axis = -1 if lr8.ndim == 3 else None
            methods, info = run_dip("super-resolve", lr8, lambda out: metrics_y(hr, to_unit(out)), options,
                                    factor=factor, channel_axis=channel_axis)
            record["methods"].update(methods)
            record["dip"] = info
            records.append(record)
            log(record)
    return records


def bench_inpaint(set_name: str, options, log) -> list[dict]:
    from skimage.restoration import inpaint_biharmonic

    records = []
    for mask_kind in options.masks:
        setting = {"random": "random50", "published": "published-masks"}[mask_kind]
        for name, path in list_images(options.data, set_name, options.images):
            if ("inpaint", set_name, setting, name) in getattr(options, "finished", ()):
                continue
            gt8 = centre_crop(load_uint8(path), options.crop)
            if mask_kind == "published":
                masked8 = centre_crop(load_uint8(path.with_name(f"{name}_masked.png")), options.crop)
                holes = masked8 == 0  # genuine zeros of the ground truth become holes too
                if holes.ndim == 3:
                    holes = holes.all(axis=-1)
            else:
                holes = random_mask(gt8.shape[:2], INPAINT_FRACTION, image_seed(options.seed, set_name, name, setting))
            observed8 = gt8.copy()
            observed8[holes] = 0
            gt = gt8 / 255.0
            record = new_record("inpaint", set_name, setting, name, shape=list(gt8.shape),
                                missing_fraction=float(holes.mean()),
                                ground_truth_zeros_in_holes=int(np.count_nonzero((gt8 == 0) & (holes if gt8.ndim == 2 else holes[..., None]))))
            record["methods"]["input"] = metrics(gt, observed8 / 255.0)
            channel_axis = -1 if gt8.ndim == 3 else None
            out, seconds = timed(inpaint_biharmonic, observed8 / 255.0, holes, channel_axis=channel_axis)
            record["methods"]["biharmonic"] = {**metrics(gt, np.clip(out, 0, 1)), "seconds": seconds}
            methods, info = run_dip("inpaint", observed8, lambda out: metrics(gt, to_unit(out)), options,
                                    mask=holes, channel_axis=channel_axis)
            record["methods"].update(methods)
            record["dip"] = info
            records.append(record)
            log(record)
    return records


BENCHES = {"denoise": bench_denoise, "super-resolve": bench_super_resolve, "inpaint": bench_inpaint}


# -- tables ----------------------------------------------------------------------------------


def group_records(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["task"], record["set"], record["setting"]), []).append(record)
    return groups


def method_order(records: list[dict]) -> list[str]:
    present = []
    for record in records:
        for key in record["methods"]:
            if key not in present:
                present.append(key)
    known = [key for key in METHOD_LABELS if key in present]
    return known + [key for key in present if key not in METHOD_LABELS]


def _mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(key: tuple[str, str, str], records: list[dict]) -> dict:
    """Means per method over a group's records (only images every method ran on)."""
    rows = {}
    for method in method_order(records):
        entries = [r["methods"].get(method) for r in records]
        entries = [e for e in entries if e]
        rows[method] = {
            "n": len(entries),
            "psnr": _mean(e.get("psnr") for e in entries),
            "ssim": _mean(e.get("ssim") for e in entries),
            "iteration": _mean(e.get("iteration") for e in entries) if any("iteration" in e for e in entries) else None,
            "seconds": _mean(e.get("seconds") for e in entries) if any("seconds" in e for e in entries) else None,
            "published": PUBLISHED.get(key, {}).get(method, ""),
        }
    gap = None
    if "dip_final" in rows and "dip_oracle" in rows:
        gap = _mean(r["methods"]["dip_oracle"]["psnr"] - r["methods"]["dip_final"]["psnr"]
                    for r in records if "dip_final" in r["methods"])
    return {"rows": rows, "oracle_gap_db": gap, "images": [r["image"] for r in records]}


def format_group(key: tuple[str, str, str], records: list[dict]) -> str:
    task, set_name, setting = key
    summary = summarise(key, records)
    shapes = sorted({"x".join(map(str, r["shape"])) for r in records})
    lines = [f"### {task} / {set_name} / {setting}  ({len(records)} images; sizes {', '.join(shapes)})", ""]
    lines.append("| method | PSNR | SSIM | iterations | seconds | published (full protocol) |")
    lines.append("|---|---:|---:|---:|---:|---|")
    for method, row in summary["rows"].items():
        iterations = "" if row["iteration"] is None else f"{row['iteration']:.0f}"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}" if row["seconds"] >= 10 else f"{row['seconds']:.2f}"
        lines.append(f"| {METHOD_LABELS.get(method, method)} | {row['psnr']:.2f} | {row['ssim']:.4f} | "
                     f"{iterations} | {seconds} | {row['published']} |")
    if summary["oracle_gap_db"] is not None:
        lines.append(f"| oracle - final gap | {summary['oracle_gap_db']:+.2f} dB | | | | |")
    lines.append("")
    # Per image PSNR, with the published per-image DIP number where there is one.
    methods = list(summary["rows"])
    per_image_published = PUBLISHED_PER_IMAGE.get(key, {})
    header = "| image | " + " | ".join(methods) + " | oracle it. |" + (" published DIP (full image) |" if per_image_published else "")
    lines.append(header)
    lines.append("|---|" + "---:|" * (len(methods) + 1) + ("---:|" if per_image_published else ""))
    for record in records:
        cells = [f"{record['methods'][m]['psnr']:.2f}" if m in record["methods"] else "" for m in methods]
        oracle_it = record["methods"].get("dip_oracle", {}).get("iteration", "")
        row = f"| {record['image']} | " + " | ".join(cells) + f" | {oracle_it} |"
        if per_image_published:
            published = per_image_published.get(record["image"])
            row += f" {'' if published is None else f'{published:.2f}'} |"
        lines.append(row)
    notes = []
    if task == "denoise" and not any("bm3d" in r["methods"] for r in records):
        notes.append("BM3D skipped: the optional `bm3d` package is not importable.")
    if task == "denoise" and not all(r.get("input_range_exact", True) for r in records):
        inexact = [r["image"] for r in records if not r.get("input_range_exact", True)]
        notes.append("noisy input not spanning exactly [0, 1] per channel (the engine rescaled it): "
                     + ", ".join(inexact))
    if task == "super-resolve":
        notes.append(f"PSNR/SSIM on BT.601 Y, {SHAVE} px shaved off each border.")
    if setting == "published-masks":
        zeros = sum(r.get("ground_truth_zeros_in_holes", 0) for r in records)
        notes.append(f"holes = masked input == 0; {zeros} genuinely black ground-truth pixels counted as holes.")
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def format_overview(records: list[dict]) -> str:
    """One line per set and setting: DIP final/oracle, gap, the baselines, the published DIP number."""
    lines = [
        "| task | set | setting | images | size | DIP final | DIP oracle (mean it.) | gap | baselines | published DIP |",
        "|---|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for key, group in group_records(records).items():
        rows = summarise(key, group)["rows"]
        shapes = sorted({"x".join(map(str, r["shape"][:2])) for r in group})
        dip = [k for k in rows if k.startswith("dip_") and k not in ("dip_final", "dip_oracle", "dip_last_output")]
        final = f"{rows['dip_final']['psnr']:.2f}" if "dip_final" in rows else ""
        oracle = (f"{rows['dip_oracle']['psnr']:.2f} ({rows['dip_oracle']['iteration']:.0f})"
                  if "dip_oracle" in rows else "")
        gap = summarise(key, group)["oracle_gap_db"]
        baselines = ", ".join(f"{METHOD_LABELS.get(k, k).split(' (')[0]} {rows[k]['psnr']:.2f}"
                              for k in rows if k != "input" and not k.startswith("dip_"))
        extra = "".join(f"; {k} {rows[k]['psnr']:.2f}" for k in dip)  # e.g. an automatically stopped result
        published = PUBLISHED.get(key, {}).get("dip_final", "").split(";")[0]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(group)} | {', '.join(shapes)} | {final}{extra} | "
                     f"{oracle} | {'' if gap is None else f'{gap:+.2f}'} | {baselines} | {published} |")
    return "\n".join(lines) + "\n"


def format_tables(records: list[dict]) -> str:
    groups = group_records(records).items()
    return "\n".join([format_overview(records)] + [format_group(key, group) for key, group in groups])


# -- output ------------------------------------------------------------------------------------


def write_results(path: Path, records: list[dict], meta: dict) -> None:
    """JSON (records, summaries, run metadata) or, for a ``.csv`` name, one row per image and method."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        fields = ["task", "set", "setting", "image", "method", "psnr", "ssim", "iteration", "seconds"]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for record in records:
                for method, values in record["methods"].items():
                    writer.writerow({**{k: record[k] for k in fields[:4]}, "method": method,
                                     **{k: values.get(k, "") for k in fields[5:]}})
        return
    summaries = [
        {"task": k[0], "set": k[1], "setting": k[2], **summarise(k, group)}
        for k, group in group_records(records).items()
    ]
    document = {"meta": meta, "summaries": summaries, "records": records}
    # Whole or not at all: a lease's end may stop the run in the middle of a write, and a
    # truncated file would lose every earlier lease's images for --resume.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=1, default=_json_default, allow_nan=True) + "\n")
    os.replace(partial, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value)} to JSON")


# -- command line ------------------------------------------------------------------------------


def _csv_list(kind):
    def parse(text: str):
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="DIP restoration quality on the standard test sets, with baselines and published numbers. "
        "Defaults are the full paper protocol (meant for a GPU).",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="benchmark data folder (default: ../shared/data)")
    parser.add_argument("--tasks", type=_csv_list(str), default=list(TASKS), help="comma list of " + ", ".join(TASKS))
    parser.add_argument("--sets", type=_csv_list(str), default=None,
                        help="comma list of sets (default: all of the chosen tasks': " + ", ".join(SET_FOLDERS) + ")")
    parser.add_argument("--images", type=int, default=None, metavar="N", help="only the first N images of each set")
    parser.add_argument("--crop", type=int, default=None, metavar="S",
                        help="centre crop of side S (of the HR image for super-resolution, at least 16 x factor); "
                        "default: whole images")
    parser.add_argument("--sigmas", type=_csv_list(float), default=[25.0, 50.0], help="noise levels of 255 (default: 25,50)")
    parser.add_argument("--noisy-input", choices=("uint8", "float"), default="uint8",
                        help="denoising: round the noisy image to 8 bits for every method (default), or keep it "
                        "float as the DIP code does; the engine rescales a float image per channel from its own "
                        "[min, max], which is not the identity when a channel does not reach both 0 and 1")
    parser.add_argument("--factors", type=_csv_list(int), default=[4], help="SR factors (default: 4; 4,8 adds x8)")
    parser.add_argument("--masks", type=_csv_list(str), default=["random", "published"],
                        help="inpainting masks: random (50 %%, fixed seed), published (*_masked.png) (default: both)")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper", help="network preset (default: paper)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per fit (default: the preset's schedule)")
    parser.add_argument("--channels", type=int, default=None, help="channels per scale (default: the preset's)")
    parser.add_argument("--jitter", type=float, default=None,
                        help="standard deviation of the input jitter (default: the task's schedule)")
    parser.add_argument("--snapshot-every", type=int, default=100,
                        help="score the average every N iterations, for the oracle (default: 100)")
    parser.add_argument("--auto-stop", choices=("default", "wmv", "validation", "off"), default="default",
                        help="also fit with automatic stopping (the engine's default rule for the task, or the one "
                        "named) and report it as 'DIP automatically stopped'; off: only the budget fit (default: default)")
    parser.add_argument("--holdout", type=float, default=None,
                        help="fraction of pixels the validation rule holds out (default: the engine's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the noise, the masks and the fits (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="write per-image results to FILE (.json, or .csv)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the images already in --out (written after every image) and fit the others: "
                        "the full protocol over several GPU leases; the options that change results must match")
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: print the tables of JSON files written by --out (several, such as "
                        "the GPU protocol's per-task files: one set of tables of all their images)")
    return parser


def parse_options(argv=None) -> argparse.Namespace:
    parser = build_parser()
    options = parser.parse_args(argv)
    for task in options.tasks:
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if options.sets is None:
        options.sets = [s for task in options.tasks for s in SETS[task]]
    for set_name in options.sets:
        if set_name not in SET_FOLDERS:
            parser.error(f"unknown set {set_name!r}; choose from {', '.join(SET_FOLDERS)}")
    for mask in options.masks:
        if mask not in ("random", "published"):
            parser.error(f"unknown mask kind {mask!r}; choose random or published")
    if options.crop is not None and options.crop < 16:
        parser.error("--crop must be at least 16")
    options.data = options.data.resolve()
    if options.resume and (options.out is None or options.out.suffix.lower() == ".csv"):
        parser.error("--resume needs a JSON --out (a CSV keeps no fit settings to compare)")
    return options


def run(options: argparse.Namespace, stream=None) -> list[dict]:
    import torch

    stream = stream or sys.stdout

    if options.threads:
        torch.set_num_threads(options.threads)

    def log(record):
        m = record["methods"]
        others = ", ".join(f"{k} {v['psnr']:.2f}" for k, v in m.items() if not k.startswith("dip_"))
        print(f"  {record['task']} {record['set']} {record['setting']} {record['image']}: "
              f"DIP final {m['dip_final']['psnr']:.2f} oracle {m['dip_oracle']['psnr']:.2f} "
              f"@{m['dip_oracle']['iteration']} ({record['dip']['fit_seconds']:.0f} s); {others}",
              file=sys.stderr, flush=True)

    engine = _engine_version()  # before the run: the checkout may change while it goes on
    previous, earlier_runs = resumed_records(options) if options.resume else ([], [])
    options.finished = {(r["task"], r["set"], r["setting"], r["image"]) for r in previous}
    # Each image's record says which engine, machine and device made it: a resumed
    # protocol gathers images from several runs (several GPU leases).
    made_by = {"napari_dip": engine, "machine": machine_name(options.device), "device": device_type(options.device),
               "torch": torch.__version__}
    others = sorted({r.get("made_by", {}).get("device") for r in previous} - {made_by["device"]})
    if others:  # the same seed draws other noise on another kind of device
        raise SystemExit(f"--resume: {options.out} holds fits made on {', '.join(map(str, others))}, "
                         f"this run fits on {made_by['device']}; use another --out")
    records = []
    started = time.perf_counter()

    def meta(complete: bool) -> dict:
        return {
            "argv": sys.argv[1:],
            "options": result_options(options),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "napari_dip": engine,
            "total_seconds": time.perf_counter() - started,
            "complete": complete,
            "earlier_runs": earlier_runs,
        }

    def keep(record):
        record["made_by"] = made_by
        records.append(record)
        log(record)
        if options.out:  # after every image: a run cut short (a lease's end) keeps what it fitted
            write_results(options.out, previous + records, meta(complete=False))

    for task in options.tasks:
        for set_name in options.sets:
            if set_name in SETS[task]:
                BENCHES[task](set_name, options, keep)
    total = time.perf_counter() - started
    print(format_tables(previous + records), file=stream)
    print(f"total {total / 60:.1f} min, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
          + (f"; {len(previous)} image(s) kept from earlier runs" if previous else ""), file=stream)
    if options.out:
        write_results(options.out, previous + records, meta(complete=True))
    return previous + records


#: The options that change an image's result: a resumed run must have the same.
RESULT_OPTIONS = ("crop", "noisy_input", "preset", "iterations", "channels", "jitter", "snapshot_every",
                  "auto_stop", "holdout", "seed")


def result_options(options) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items() if k != "finished"}


def resumed_records(options) -> tuple[list[dict], list[dict]]:
    """The records of ``--out`` to keep (none if it does not exist yet), and the earlier
    runs' metadata; refuses a file made with other result options."""
    if not options.out or not options.out.exists():
        return [], []
    document = json.loads(options.out.read_text())
    before = document.get("meta", {})
    mine = result_options(options)
    differ = [k for k in RESULT_OPTIONS if k in before.get("options", {}) and before["options"][k] != mine.get(k)]
    if differ:
        was = ", ".join(f"{k}={before['options'][k]!r}" for k in differ)
        raise SystemExit(f"--resume: {options.out} was made with other {', '.join(differ)} ({was}); use another --out")
    earlier = [*before.get("earlier_runs", []), {k: before.get(k) for k in ("date", "napari_dip", "torch", "argv")}]
    return document.get("records", []), earlier


def reported_records(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """The records of the JSON files ``paths`` (written by ``--out``), and a line per file
    saying what made them; refuses an image that two files both hold."""
    records, notes, seen = [], [], {}
    for path in paths:
        document = json.loads(path.read_text())
        for record in document["records"]:
            key = (record["task"], record["set"], record["setting"], record["image"])
            if key in seen:
                raise SystemExit(f"--report: {' '.join(key)} is in both {seen[key]} and {path}")
            seen[key] = path
            records.append(record)
        meta = document.get("meta", {})
        runs = len(meta.get("earlier_runs", [])) + 1
        makers = sorted({f"{r['made_by'].get('machine')} (torch {r['made_by'].get('torch')}, "
                         f"napari-dip {str(r['made_by'].get('napari_dip', {}).get('commit'))[:7]})"
                         for r in document["records"] if "made_by" in r})
        notes.append(f"{path}: {len(document['records'])} image(s) from {runs} run(s), the last of "
                     f"{meta.get('date')} ({meta.get('total_seconds', float('nan')) / 60:.1f} min, "
                     f"{meta.get('torch_threads')} thread(s)); made on {', '.join(makers) or 'an unrecorded machine'}; "
                     f"options {meta.get('options')}")
    return records, notes


def device_type(device: str) -> str:
    """``cuda``, ``mps`` or ``cpu``: what ``--device`` resolves to here."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def machine_name(device: str) -> str:
    """The card a fit ran on (``NVIDIA H200``) or the CPU."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def _engine_version() -> dict:
    """napari-dip's version and, in a git checkout, the commit (engine files change fast)."""
    import subprocess

    import napari_dip

    info = {"version": getattr(napari_dip, "__version__", None)}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            info["src_modified"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def main(argv=None) -> int:
    options = parse_options(argv)
    if options.report:
        records, notes = reported_records(options.report)
        print(format_tables(records))
        print("\n".join(notes))
        return 0
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
