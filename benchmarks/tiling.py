"""Images in tiles (issue 10): are the seams visible, and does a 4096x4096 image fit in memory?

Two measurements, each its own sub-command so that each run stays short on a 2-core CPU:

``seams`` -- a noisy grey image (Set12, Gaussian sigma 25 of 255, fixed seed, clipped, rounded to
8 bits, as ``benchmarks/quality.py`` makes it; a centre crop) is denoised once whole and once in
overlapping tiles, with the same network, noise estimate (the whole image's), seed and fixed
iteration budget (automatic stopping off, so both fits run the same number of steps). The
tiles' results are blended three ways from the same fits: the raised-cosine ramp the API uses,
a linear ramp, and hard stitching (each pixel from the tile whose centre is nearest: what tiling
without blending gives). Reported: PSNR of the whole image, of a band around the seams (pixels
within ``--band`` px of a tile's inner edge, and of the lines where hard stitching cuts) and of
the rest, for every result and for the whole-image fit, and the seam step: the RMS jump of
the error between neighbouring pixels across the stitching lines over that between all
neighbours (about 1 when nothing happens at the seams). ``--part whole`` and ``--part tiles``
run the two fits separately (each under the CPU lock), ``--part report`` combines them::

    python benchmarks/tiling.py seams --part whole --work /tmp/tiling
    python benchmarks/tiling.py seams --part tiles --work /tmp/tiling
    python benchmarks/tiling.py seams --part report --work /tmp/tiling --out benchmarks/results/tiling-seams.json

``large`` -- a synthetic 4096x4096 uint16 fluorescence-like image (blurred blobs and filaments
under Poisson-Gaussian noise) goes through the public API (``napari_dip.iter_restore``) with
the tiles chosen automatically from the device's free memory, a small fixed budget per tile.
Reported: the tiles, the whole image's memory estimate against the free memory, peak resident
memory of the process (``resource.getrusage``), seconds per tile and in all::

    python benchmarks/tiling.py large --size 4096 --iterations 5 --out benchmarks/results/tiling-4096.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def psnr(result: np.ndarray, clean: np.ndarray, where: np.ndarray | None = None) -> float:
    error = (np.asarray(result, np.float64) - clean) ** 2
    mse = float(error[where].mean() if where is not None else error.mean())
    return 10 * np.log10(1.0 / mse)


def noisy_crop(data: Path, image: str, crop: int, sigma: float, seed: int):
    import imageio.v3 as iio

    clean = iio.imread(data / "denoise" / "Set12" / f"{image}.png").astype(np.float64) / 255.0
    top, left = (clean.shape[0] - crop) // 2, (clean.shape[1] - crop) // 2
    clean = clean[top:top + crop, left:left + crop]
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0.0, sigma / 255.0, clean.shape), 0, 1)
    return clean, np.round(noisy * 255).astype(np.uint8)


def fit_settings(observed: np.ndarray, iterations: int, preset: str):
    """The API's settings for denoising ``observed`` (the whole image's noise estimate),
    with a fixed budget and no automatic stopping."""
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import estimate_noise

    sigma = estimate_noise(observed)
    net, config = settings_for("denoise", preset, noise_sigma=sigma, iterations=iterations, stopping="none",
                               device="cpu")
    return net, replace(config, seed=0), sigma


def run_fit(observed: np.ndarray, net, config) -> tuple[np.ndarray, float]:
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.forward import Identity

    started = time.perf_counter()
    final = None
    for final in Fitter(observed, Identity(), net, config).run(config.iterations):
        pass
    return final.average, time.perf_counter() - started


def seams(args) -> None:
    from napari_dip.engine.tiling import TileGrid

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clean, noisy = noisy_crop(Path(args.data), args.image, args.crop, args.sigma, args.seed)
    observed = (noisy.astype(np.float32) / 255.0)[None]
    net, config, sigma = fit_settings(observed, args.iterations, args.preset)
    grid = TileGrid(args.crop, args.crop, args.tile, args.overlap)
    import torch

    meta = {"image": f"Set12/{args.image}.png", "crop": args.crop, "sigma": args.sigma, "seed": args.seed,
            "preset": args.preset, "iterations": args.iterations, "noise_sigma_estimate": sigma,
            "threads": torch.get_num_threads(), "grid": grid.to_dict()}
    if args.part == "whole":
        average, seconds = run_fit(observed, net, config)
        np.save(work / "whole.npy", average)
        (work / "whole.json").write_text(json.dumps({**meta, "seconds": seconds}))
        print(f"whole {args.crop}^2: {seconds:.1f} s, PSNR {psnr(average[0], clean):.2f} dB")
    elif args.part == "tiles":
        pieces, seconds = [], []
        for tile in grid.tiles:
            average, took = run_fit(np.ascontiguousarray(tile.cut(observed)), net, config)
            pieces.append(average)
            seconds.append(took)
            print(f"tile {tile.number + 1}/{grid.count} {tile.box()}: {took:.1f} s")
        np.savez(work / "tiles.npz", *pieces)
        (work / "tiles.json").write_text(json.dumps({**meta, "seconds": seconds}))
    else:
        report(args, clean, noisy, grid, work)


def hard_stitch(grid, pieces) -> np.ndarray:
    """Each pixel from the tile whose centre is nearest (cuts in the middle of each overlap)."""
    result = np.zeros((1, grid.height, grid.width), np.float32)
    rows = np.arange(grid.height)[:, None]
    cols = np.arange(grid.width)[None, :]
    best = np.full((grid.height, grid.width), np.inf)
    for tile, piece in zip(grid.tiles, pieces):
        cy, cx = tile.top + (tile.height - 1) / 2, tile.left + (tile.width - 1) / 2
        distance = np.maximum(np.abs(rows - cy), np.abs(cols - cx))
        inside = np.zeros_like(best, bool)
        inside[tile.window()] = True
        take = inside & (distance < best)
        full = np.zeros_like(result)
        full[:, tile.window()[0], tile.window()[1]] = piece
        result[:, take] = full[:, take]
        best[take] = distance[take]
    return result


def seam_band(grid, width: int) -> np.ndarray:
    """Pixels within ``width`` of a tile's inner edge or of a hard-stitching cut."""
    band = np.zeros((grid.height, grid.width), bool)
    for tile in grid.tiles:
        rows, cols = tile.window()
        top, bottom, left, right = tile.overlaps
        if top:
            band[rows.start:rows.start + width, cols] = True
            cut = rows.start + top // 2
            band[max(cut - width, 0):cut + width, cols] = True
        if bottom:
            band[rows.stop - width:rows.stop, cols] = True
        if left:
            band[rows, cols.start:cols.start + width] = True
            cut = cols.start + left // 2
            band[rows, max(cut - width, 0):cut + width] = True
        if right:
            band[rows, cols.stop - width:cols.stop] = True
    return band


def cut_pairs(grid) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the vertical and horizontal neighbour pairs (pixel, pixel + 1) that straddle a
    line where hard stitching cuts (the middle of an overlap)."""
    rows = np.zeros((grid.height - 1, grid.width), bool)
    cols = np.zeros((grid.height, grid.width - 1), bool)
    for tile in grid.tiles:
        top, _, left, _ = tile.overlaps
        if top:
            rows[tile.top + top // 2 - 1, tile.left:tile.left + tile.width] = True
        if left:
            cols[tile.top:tile.top + tile.height, tile.left + left // 2 - 1] = True
    return rows, cols


def seam_step(result, clean, grid) -> float:
    """How much the error jumps across the stitching lines, relative to everywhere: RMS of
    the error's difference between neighbours straddling a cut over that of all neighbours
    (about 1: no seam; above 1: a visible step)."""
    error = np.asarray(result, np.float64) - clean
    dy, dx = np.diff(error, axis=0), np.diff(error, axis=1)
    rows, cols = cut_pairs(grid)
    at_cuts = np.concatenate([dy[rows], dx[cols]])
    everywhere = np.concatenate([dy.ravel(), dx.ravel()])
    return float(np.sqrt(np.mean(at_cuts ** 2)) / np.sqrt(np.mean(everywhere ** 2)))


def report(args, clean, noisy, grid, work: Path) -> None:
    from napari_dip.engine.tiling import TileBlender

    whole_meta = json.loads((work / "whole.json").read_text())
    tiles_meta = json.loads((work / "tiles.json").read_text())
    whole = np.load(work / "whole.npy")
    stored = np.load(work / "tiles.npz")
    pieces = [stored[f"arr_{i}"] for i in range(grid.count)]
    results = {"whole-image fit": whole[0]}
    for kind in ("cosine", "linear"):
        blender = TileBlender(grid, 1, kind=kind)
        for tile, piece in zip(grid.tiles, pieces):
            blender.add(tile, piece)
        results[f"tiles, {kind} blend" + (" (API default)" if kind == "cosine" else "")] = blender.result()[0]
    results["tiles, hard stitching"] = hard_stitch(grid, pieces)[0]
    band = seam_band(grid, args.band)
    rows = []
    for name, result in results.items():
        rows.append({"result": name, "psnr": psnr(result, clean), "psnr_seam_band": psnr(result, clean, band),
                     "psnr_rest": psnr(result, clean, ~band), "seam_step": seam_step(result, clean, grid),
                     "max_abs_difference_to_whole_fit": float(np.abs(result - whole[0]).max())})
    out = {
        "benchmark": "tiling seams", "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, 2-core CPU, no GPU", "python": platform.python_version(),
        "settings": {k: v for k, v in whole_meta.items() if k != "seconds"},
        "band_px": args.band, "band_fraction": float(band.mean()),
        "noisy_psnr": psnr(noisy / 255.0, clean),
        "seconds_whole": whole_meta["seconds"], "seconds_tiles": tiles_meta["seconds"],
        "results": rows,
    }
    print(f"{'result':36s} {'PSNR':>7s} {'seam band':>10s} {'rest':>7s} {'seam step':>10s}")
    for row in rows:
        print(f"{row['result']:36s} {row['psnr']:7.2f} {row['psnr_seam_band']:10.2f} {row['psnr_rest']:7.2f} "
              f"{row['seam_step']:10.3f}")
    print(f"noisy {out['noisy_psnr']:.2f} dB; band {args.band} px = {out['band_fraction']:.1%} of the pixels; "
          f"whole fit {whole_meta['seconds']:.0f} s, tiles {sum(tiles_meta['seconds']):.0f} s")
    write(out, args.out)


def synthetic_fluorescence(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurred blobs and filaments, 100 to ~3000 counts, with Poisson and Gaussian noise (uint16)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    scene = np.zeros((size, size), np.float32)
    count = size * size // 4000
    ys, xs = rng.integers(0, size, (2, count))
    scene[ys, xs] = rng.uniform(0.5, 1.0, count)
    for _ in range(size // 64):  # filaments: random walks
        y, x = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(400):
            angle += rng.normal(0, 0.1)
            y, x = (y + np.sin(angle)) % size, (x + np.cos(angle)) % size
            scene[int(y), int(x)] = 0.6
    scene = ndimage.gaussian_filter(scene, 3.0)
    scene *= 1.0 / max(float(scene.max()), 1e-6)
    expected = 100 + 2900 * scene
    noisy = rng.poisson(expected).astype(np.float64) + rng.normal(0, 20, expected.shape)
    return expected.astype(np.float32), np.clip(noisy, 0, 65535).astype(np.uint16)


def large(args) -> None:
    import torch

    from napari_dip import iter_restore
    from napari_dip.engine.devices import free_memory_bytes, resolve_device

    started = time.perf_counter()
    _, image = synthetic_fluorescence(args.size, args.seed)
    made = time.perf_counter() - started
    free = free_memory_bytes(resolve_device("cpu"))
    print(f"{args.size}x{args.size} uint16 made in {made:.1f} s; {free / 2**30:.1f} GiB free", flush=True)
    final, first_at = None, None
    started = time.perf_counter()
    for snap in iter_restore("denoise", image, preset=args.preset, iterations=args.iterations, stopping="none",
                             snapshot_every=None, snapshot_seconds=None, device="cpu", tile_size=args.tile_size):
        final = snap
        if first_at is None:
            first_at = time.perf_counter() - started
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    tiling = final.settings["tiling"]
    seconds = [tile["seconds"] for tile in tiling["tiles"]]
    out = {
        "benchmark": "tiling large image", "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": f"{platform.machine()}, 2-core CPU, no GPU",
        "threads": torch.get_num_threads(), "size": args.size, "dtype": str(image.dtype), "preset": args.preset,
        "iterations_per_tile": args.iterations, "result_dtype": str(final.average.dtype),
        "result_shape": list(final.average.shape), "free_bytes_before": free,
        "tiling": {k: v for k, v in tiling.items() if k != "tiles"},
        "noise": final.settings.get("noise"), "noise_sigma_estimate": final.settings.get("noise_sigma_estimate"),
        "peak_rss_bytes": peak, "seconds_total": total, "seconds_per_tile": seconds,
        "seconds_per_tile_mean": float(np.mean(seconds)), "seconds_per_iteration_mean":
            float(np.mean(seconds)) / args.iterations,
    }
    print(f"tiles: {tiling['count']} of {tiling['tile_size']} px (overlap {tiling['overlap']}, {tiling['reason']}); "
          f"whole image needs about {tiling['whole_image_bytes'] / 2**30:.1f} GiB, a tile about "
          f"{tiling['tile_bytes'] / 2**30:.1f} GiB; peak RSS {peak / 2**30:.2f} GiB; {total:.0f} s in all, "
          f"{np.mean(seconds):.1f} s per tile ({args.iterations} iterations)")
    write(out, args.out)


def write(out: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seam = commands.add_parser("seams", help="seam quality: whole-image fit against tiles")
    seam.add_argument("--part", choices=("whole", "tiles", "report"), required=True)
    seam.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    seam.add_argument("--image", default="08", help="Set12 image (default: 08, 512x512)")
    seam.add_argument("--crop", type=int, default=384)
    seam.add_argument("--sigma", type=float, default=25.0, help="of 255")
    seam.add_argument("--seed", type=int, default=0)
    seam.add_argument("--tile", type=int, default=256)
    seam.add_argument("--overlap", type=int, default=32)
    seam.add_argument("--iterations", type=int, default=500)
    seam.add_argument("--preset", default="fast")
    seam.add_argument("--band", type=int, default=8, help="half-width of the seam band in pixels")
    seam.add_argument("--work", default="/tmp/napari-dip-tiling")
    seam.add_argument("--out")
    big = commands.add_parser("large", help="a large uint16 image in tiles: memory and time per tile")
    big.add_argument("--size", type=int, default=4096)
    big.add_argument("--iterations", type=int, default=5)
    big.add_argument("--tile-size", type=int, help="default: chosen from the free memory")
    big.add_argument("--preset", default="fast")
    big.add_argument("--seed", type=int, default=0)
    big.add_argument("--out")
    args = parser.parse_args(argv)
    seams(args) if args.command == "seams" else large(args)


if __name__ == "__main__":
    main()
