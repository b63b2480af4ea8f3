"""A built-in example with known ground truth: denoise scikit-image's camera man.

Used by ``napari-dip demo`` and by the README picture, so what the README shows is what a
user's machine reproduces.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: Standard deviation of the added Gaussian noise, in 8-bit grey levels (the paper's 25).
SIGMA = 25


def example_pair(size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` float32 images in [0, 1]: a ``size`` x ``size`` camera-man crop
    and the same with Gaussian noise of sigma 25/255, clipped to [0, 1].

    >>> clean, noisy = example_pair(32)
    >>> clean.shape, noisy.dtype
    ((32, 32), dtype('float32'))
    """
    from skimage import data, transform

    camera = data.camera().astype(np.float32) / 255.0
    crop = camera[64:448, 64:448]  # the man and his camera, little sky
    clean = transform.resize(crop, (size, size), anti_aliasing=True).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0.0, SIGMA / 255.0, clean.shape), 0.0, 1.0).astype(np.float32)
    return clean, noisy


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def run_demo(
    iterations: int = 800,
    preset: str = "fast",
    size: int = 128,
    seed: int = 0,
    device: str = "auto",
    figure: Path | None = None,
    progress=None,
    report=print,
) -> dict:
    """Denoise the example, report PSNR before and after and the time taken; return them.

    ``progress(snapshots, total)`` may wrap the snapshot stream (the CLI's progress bar).
    """
    from .cli import PROGRESS_SECONDS, format_rate
    from .io import check_folder_writable
    from .restore import iter_restore, last_snapshot

    if figure is not None:
        check_folder_writable(Path(figure).parent)  # before the fit, not after it
    clean, noisy = example_pair(size, seed)
    start = time.perf_counter()
    snapshots = iter_restore(
        "denoise", noisy, preset=preset, iterations=iterations, seed=seed, device=device, snapshot_every=10,
        snapshot_seconds=None if progress is None else PROGRESS_SECONDS,
    )
    if progress is not None:
        snapshots = progress(snapshots, iterations)
    final = last_snapshot(snapshots)
    seconds = time.perf_counter() - start
    restored = final.average
    result = {
        "preset": final.settings["preset"],
        "psnr_noisy": psnr(clean, noisy),
        "psnr_restored": psnr(clean, restored),
        "seconds": seconds,
        "iterations": final.iteration,
        "device": final.settings["device"],
        # The README's figure repeats to the bit on the same machine, not always on another: say which ran it.
        "kernels": final.settings.get("kernels"),
    }
    used = final.settings["preset"] + (f" ({preset})" if preset != final.settings["preset"] else "")
    report(
        f"camera man {size}x{size}, Gaussian noise sigma {SIGMA}/255, preset {used}, "
        f"{final.iteration} iterations on {result['kernels'] or result['device']}"
    )
    report(f"PSNR noisy:    {result['psnr_noisy']:.2f} dB")
    report(f"PSNR restored: {result['psnr_restored']:.2f} dB  ({result['psnr_restored'] - result['psnr_noisy']:+.2f} dB)")
    report(f"time:          {seconds:.1f} s ({format_rate(final.iteration / seconds)})")
    if figure is not None:
        save_figure(figure, noisy, restored, clean)
        report(f"figure:        {figure}")
    return result


def save_figure(path: Path, noisy: np.ndarray, restored: np.ndarray, clean: np.ndarray) -> None:
    """Save noisy | restored | clean side by side as an 8-bit PNG, 2x enlarged."""
    import imageio.v3 as iio

    gap = np.ones((noisy.shape[0], 4), np.float32)
    row = np.concatenate([noisy, gap, restored, gap, clean], axis=1)
    picture = np.kron(np.clip(row, 0, 1), np.ones((2, 2), np.float32))
    iio.imwrite(path, (picture * 255).round().astype(np.uint8))
