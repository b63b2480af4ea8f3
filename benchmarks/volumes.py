"""3D DIP against per-plane DIP and BM4D on a synthetic volume with known ground truth.

    python benchmarks/volumes.py --shape 16 64 64 --spacing 3 1 1 --out benchmarks/results/volumes-cpu.json

The volume is made in memory (nothing is read or written besides the JSON): bright blobs
(ellipsoids of 1.5 to 4 pixels' radius, round in physical units) and filaments (random
smooth curves) placed in physical space, sampled on voxels whose Z step is ``spacing[0]``
times the pixel size, blurred by a Gaussian PSF three times longer along the optical axis
than across it (as a widefield or confocal PSF is), scaled to ``--peak`` photons over a
background, then given Poisson noise and Gaussian read noise (``--read-noise`` photons),
and stored as uint16 with a camera offset.

Three restorations, one after the other in this process, each with its automatic stop:

* **per-plane DIP**: ``napari_dip.denoise(axes="ZYX")`` with the fast preset and warm start
  across planes (the default 2D path);
* **3D DIP**: ``napari_dip.denoise(axes="ZYX", volumetric=True, spacing=...)``;
* **BM4D** (``bm4d`` package): on the generalised Anscombe transform of the counts, with the
  noise parameters the volume was made with (an oracle BM4D gets; DIP estimates its own),
  and the closed-form approximation of the exact unbiased inverse (Makitalo and Foi).

PSNR is measured on the photon scale against the noise-free volume, with the clean
volume's range as the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OFFSET = 100.0  # camera offset of the stored counts


def synthetic_volume(shape, spacing, seed=0, blobs=40, filaments=12, psf_sigma=1.0):
    """A noise-free volume of ``shape`` (Z, Y, X) in [0, 1]: blobs and filaments placed in
    physical units (pixel = 1, Z step = ``spacing[0] / spacing[1]``), blurred by the PSF."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z_step = spacing[0] / spacing[1]
    depth, height, width = shape
    extent = np.array([depth * z_step, height, width], float)
    z, y, x = np.meshgrid(np.arange(depth) * z_step, np.arange(height), np.arange(width), indexing="ij")
    volume = np.zeros(shape, np.float64)
    for _ in range(blobs):
        centre = rng.uniform(0.1, 0.9, 3) * extent
        radius = rng.uniform(1.5, 4.0)
        brightness = rng.uniform(0.4, 1.0)
        distance = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) / radius**2
        volume += brightness * np.exp(-distance)
    # Filaments: smooth random walks in physical space, rasterised at sub-voxel steps.
    lines = np.zeros(shape, np.float64)
    for _ in range(filaments):
        point = rng.uniform(0.1, 0.9, 3) * extent
        direction = rng.normal(size=3)
        brightness = rng.uniform(0.3, 0.8)
        for _ in range(int(4 * max(height, width))):
            direction += rng.normal(scale=0.15, size=3)
            direction /= np.linalg.norm(direction)
            point = point + 0.5 * direction
            index = np.round(point / np.array([z_step, 1.0, 1.0])).astype(int)
            if np.any(index < 0) or np.any(index >= np.array(shape)):
                break
            lines[tuple(index)] = brightness
    volume += ndimage.gaussian_filter(lines, sigma=(0.8 / z_step, 0.8, 0.8)) * 4.0
    # The microscope's PSF: three times longer along Z than across, in physical units.
    volume = ndimage.gaussian_filter(volume, sigma=(3 * psf_sigma / z_step, psf_sigma, psf_sigma))
    # Scaled so that the brightest 0.5 % saturate: a few overlapping blobs would otherwise
    # set the scale and leave the rest of the structure dim.
    volume = (volume - volume.min()) / (np.quantile(volume, 0.995) - volume.min())
    return np.clip(volume, 0.0, 1.0)


def noisy_counts(clean, peak, background, read_noise, seed=1):
    """Poisson counts of ``background + peak * clean`` photons plus Gaussian read noise,
    stored as uint16 over :data:`OFFSET`."""
    rng = np.random.default_rng(seed)
    photons = background + peak * clean
    counts = rng.poisson(photons).astype(np.float64) + rng.normal(0.0, read_noise, clean.shape)
    return np.clip(np.round(counts + OFFSET), 0, 65535).astype(np.uint16), photons


def psnr(result_photons, clean_photons):
    mse = np.mean((np.asarray(result_photons, np.float64) - clean_photons) ** 2)
    peak = clean_photons.max() - clean_photons.min()
    return float(10 * np.log10(peak**2 / mse))


def gat(photons, read_noise):
    """Generalised Anscombe transform for unit gain: noise of standard deviation ~1."""
    return 2.0 * np.sqrt(np.maximum(photons + 3.0 / 8.0 + read_noise**2, 0.0))


def gat_inverse(d, read_noise):
    """Closed-form approximation of the exact unbiased inverse (Makitalo and Foi, 2011/2013)."""
    d = np.maximum(d, 0.8)
    exact_poisson = 0.25 * d**2 + 0.25 * np.sqrt(1.5) / d - 11.0 / 8.0 / d**2 + 5.0 / 8.0 * np.sqrt(1.5) / d**3 - 1.0 / 8.0
    return exact_poisson - read_noise**2


def run_bm4d(noisy, read_noise):
    import bm4d

    photons = noisy.astype(np.float64) - OFFSET
    transformed = gat(photons, read_noise)
    start = time.perf_counter()
    denoised = bm4d.bm4d(transformed, sigma_psd=1.0)
    seconds = time.perf_counter() - start
    return gat_inverse(np.asarray(denoised, np.float64), read_noise), seconds, {"sigma_psd": 1.0, "transform": "GAT"}


def run_dip(noisy, volumetric, spacing, args):
    from napari_dip.restore import last_snapshot
    from napari_dip.volumes import iter_restore_volumes

    settings = {"preset": args.preset, "device": "cpu", "seed": args.seed, "threads": args.threads}
    if args.channels:
        settings["channels"] = args.channels
    start = time.perf_counter()
    if volumetric:
        stream = iter_restore_volumes("denoise", noisy, axes="ZYX", spacing=spacing, snapshot_every=None, **settings)
        final = last_snapshot(snap for _, snap in stream)
        result = final.average
        record = {
            "iterations": final.iteration,
            "stop_reason": final.stop_reason,
            "best_iteration": final.best_iteration,
            "strides": final.settings["volumetric"]["strides"],
            "network_parameters": final.settings.get("network_parameters"),
            "noise": final.settings.get("noise"),
        }
    else:
        from napari_dip.restore import iter_restore_planes

        finals = [
            (index, snap)
            for index, snap in iter_restore_planes("denoise", noisy, axes="ZYX", warm_start=True,
                                                   snapshot_every=None, **settings)
            if snap.done
        ]
        result = np.stack([snap.average for _, snap in finals])
        record = {
            "iterations_per_plane": [snap.iteration for _, snap in finals],
            "stop_reasons": sorted({snap.stop_reason for _, snap in finals}),
            "seconds_per_plane": [round(snap.elapsed, 2) for _, snap in finals],
            "noise": finals[0][1].settings.get("noise"),
        }
    seconds = time.perf_counter() - start
    return result.astype(np.float64) - OFFSET, seconds, record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 64, 64), metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 1.0, 1.0), metavar=("Z", "Y", "X"))
    parser.add_argument("--peak", type=float, default=30.0, help="photons at the brightest voxel above background")
    parser.add_argument("--background", type=float, default=5.0)
    parser.add_argument("--read-noise", type=float, default=2.0, help="Gaussian read noise, photons")
    parser.add_argument("--methods", nargs="+", default=["bm4d", "3d", "per-plane"],
                        choices=["bm4d", "3d", "per-plane"])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--channels", type=int, default=None, help="network width (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volume-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    shape, spacing = tuple(args.shape), tuple(args.spacing)
    clean = synthetic_volume(shape, spacing, seed=args.volume_seed)
    noisy, clean_photons = noisy_counts(clean, args.peak, args.background, args.read_noise, seed=args.volume_seed + 1)
    results = {
        "noisy": {"psnr": round(psnr(noisy.astype(np.float64) - OFFSET, clean_photons), 3), "seconds": 0.0},
    }
    print(f"volume {shape} spacing {spacing}: noisy PSNR {results['noisy']['psnr']:.2f} dB", flush=True)
    for method in args.methods:
        if method == "bm4d":
            restored, seconds, record = run_bm4d(noisy, args.read_noise)
        else:
            restored, seconds, record = run_dip(noisy, method == "3d", spacing, args)
        results[method] = {"psnr": round(psnr(restored, clean_photons), 3), "seconds": round(seconds, 1), **record}
        print(f"{method}: {results[method]['psnr']:.2f} dB in {seconds:.1f} s", flush=True)

    report = {
        "benchmark": "volumes",
        "command": "python benchmarks/volumes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "volume": {"shape": list(shape), "spacing": list(spacing), "peak_photons": args.peak,
                   "background_photons": args.background, "read_noise_photons": args.read_noise,
                   "volume_seed": args.volume_seed},
        "preset": args.preset,
        "channels": args.channels,
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: (v["psnr"], v["seconds"]) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
