"""Throughput of ``napari-dip batch`` against one ``napari-dip denoise`` command per file.

Makes ``--images`` noisy crops (``--size``² pixels, Gaussian noise sigma 25 of 255, seeded)
of the Set12 images in a temporary folder, then, in one run:

* **single**: one ``napari-dip denoise IN -o OUT`` command per image, one after another
  (each pays Python, PyTorch and network start-up; a fit uses PyTorch's default threads,
  i.e. every core, for its one image);
* **batch**: one ``napari-dip batch FOLDER --task denoise --out DIR`` command: a Dask
  ``LocalCluster`` with one single-threaded worker process per core, one image per worker
  at a time.

Both arms run the same fixed budget (``--iterations N --stop none``) with the fast preset
on the CPU, so they do the same work; the PSNR of the results against the clean crops is
reported as a check of that. Memory: the largest peak RSS of a single-file command
(``RUSAGE_CHILDREN``), and each batch worker's peak RSS as its records say.

    PYTHONPATH=src python benchmarks/batch_throughput.py --data /work/shared/data \\
        --out benchmarks/results/batch-throughput-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import imageio.v3 as iio
import numpy as np

SIGMA = 25 / 255


def make_crops(data: Path, folder: Path, count: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` noisy crops of the Set12 images written as PNG into ``folder``; the clean
    crops by file name."""
    rng = np.random.default_rng(seed)
    sources = sorted((data / "denoise" / "Set12").glob("*.png"))
    if not sources:
        raise SystemExit(f"no Set12 images under {data / 'denoise' / 'Set12'}")
    clean = {}
    for i in range(count):
        image = np.asarray(iio.imread(sources[i % len(sources)]), np.float64) / 255
        if image.ndim == 3:
            image = image[..., :3].mean(axis=-1)
        corners = [(0, 0), (image.shape[0] - size, image.shape[1] - size), (0, image.shape[1] - size),
                   (image.shape[0] - size, 0)]
        top, left = corners[(i // len(sources)) % len(corners)]
        crop = image[top:top + size, left:left + size]
        noisy = np.clip(crop + rng.normal(0, SIGMA, crop.shape), 0, 1)
        name = f"crop{i:02d}.png"
        iio.imwrite(folder / name, (noisy * 255).round().astype(np.uint8))
        clean[name] = crop
    return clean


def psnr(result: np.ndarray, clean: np.ndarray) -> float:
    error = np.mean((np.asarray(result, np.float64) / 255 - clean) ** 2)
    return float(10 * np.log10(1 / error))


def mean_psnr(folder: Path, clean: dict) -> float:
    return float(np.mean([psnr(iio.imread(folder / name), crop) for name, crop in clean.items()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--workers", type=int, help="batch workers (default: one per core)")
    parser.add_argument("--out", type=Path, help="results JSON")
    args = parser.parse_args()

    fit = ["--preset", "fast", "--iterations", str(args.iterations), "--stop", "none", "--device", "cpu", "-q"]
    napari_dip = [sys.executable, "-m", "napari_dip.cli"]
    work = Path(tempfile.mkdtemp(prefix="napari-dip-batch-bench-"))
    try:
        inputs, single_out, batch_out = work / "in", work / "single", work / "batch"
        for folder in (inputs, single_out):
            folder.mkdir()
        clean = make_crops(args.data, inputs, args.images, args.size)

        started = time.perf_counter()
        for name in sorted(clean):
            subprocess.run([*napari_dip, "denoise", str(inputs / name), "-o", str(single_out / name), *fit],
                           check=True, stdout=subprocess.DEVNULL)
        single_seconds = time.perf_counter() - started
        single_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        batch_command = [*napari_dip, "batch", str(inputs), "--task", "denoise", "--out", str(batch_out), *fit]
        if args.workers:
            batch_command += ["--workers", str(args.workers)]
        started = time.perf_counter()
        subprocess.run(batch_command, check=True, stdout=subprocess.DEVNULL)
        batch_seconds = time.perf_counter() - started
        records = [json.loads(p.read_text()) for p in batch_out.glob("*.png.json")]
        assert len(records) == args.images and all(r["status"] == "done" for r in records)
        workers: dict[int, float] = {}
        for record in records:
            workers[record["process"]] = max(workers.get(record["process"], 0.0), record["process_peak_rss_mib"])
        threads = sorted({record["settings"]["threads"] for record in records})

        single_rate = args.images / single_seconds * 60
        batch_rate = args.images / batch_seconds * 60
        result = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            "python": platform.python_version(),
            "command": " ".join(["benchmarks/batch_throughput.py", *sys.argv[1:]]),
            "images": args.images,
            "size": args.size,
            "iterations": args.iterations,
            "fit_options": " ".join(fit),
            "single": {
                "command": "napari-dip denoise IN -o OUT " + " ".join(fit),
                "threads": "PyTorch default (all cores)",
                "seconds": round(single_seconds, 1),
                "images_per_minute": round(single_rate, 2),
                "peak_rss_mib_per_command": round(single_peak_mib, 1),
                "mean_psnr": round(mean_psnr(single_out, clean), 2),
            },
            "batch": {
                "command": "napari-dip batch IN_FOLDER --task denoise --out DIR " + " ".join(fit)
                + (f" --workers {args.workers}" if args.workers else ""),
                "workers": len(workers),
                "threads_per_fit": threads,
                "seconds": round(batch_seconds, 1),
                "images_per_minute": round(batch_rate, 2),
                "peak_rss_mib_per_worker": sorted(round(v, 1) for v in workers.values()),
                "mean_psnr": round(mean_psnr(batch_out, clean), 2),
            },
            "speedup": round(batch_rate / single_rate, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
