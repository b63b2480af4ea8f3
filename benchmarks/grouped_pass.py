"""Is fitting K images of one shape in one grouped pass faster than K separate fits?

    PYTHONPATH=src python benchmarks/grouped_pass.py --size 128 --replicas 1,2,4 --threads 1,2

Issue 12 asks whether ``napari-dip batch`` should fit several small images of one shape
together on one worker, as the engine already runs ``runs=K`` (K independent networks as
one grouped network: grouped convolutions, one optimiser step for all). The cost of a step
does not depend on whether the K replicas fit one image or K different ones (the
observation is broadcast either way), so this times the engine's own ``runs=K`` fit.

For each thread count (the batch's workers use 1), one :class:`~napari_dip.engine.fit.Fitter`
per K (``fast`` denoising preset, no automatic stop, a random grey ``--size``² image) is
advanced ``--steps`` iterations at a time, in turn, the order reversed every round, after
one untimed block each. Per K: the median seconds per step, and images per minute for a
``--iterations`` budget, ``K * 60 / (iterations * seconds per step)``; the gain is that
against K separate single fits, ``K * t(1) / t(K)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def make_fitter(size: int, replicas: int, threads: int, iterations: int):
    import numpy as np

    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.presets import settings_for

    image = np.random.default_rng(0).uniform(0, 1, (1, size, size)).astype(np.float32)
    network, config = settings_for("denoise", "fast", stopping="none", threads=threads, iterations=iterations,
                                   device="cpu", seed=0, runs=replicas)
    return Fitter(image, Identity(), network, config)


def measure(size: int, replicas: list[int], threads: int, steps: int, rounds: int) -> dict[int, list[float]]:
    runs = {k: make_fitter(size, k, threads, steps * (rounds + 1)).run(snapshot_every=steps) for k in replicas}
    for run in runs.values():  # warm-up: the first block of each, untimed
        next(run)
    times: dict[int, list[float]] = {k: [] for k in replicas}
    for round_ in range(rounds):
        for k in replicas if round_ % 2 == 0 else replicas[::-1]:
            start = time.perf_counter()
            next(runs[k])
            times[k].append((time.perf_counter() - start) / steps)
    for run in runs.values():
        run.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--replicas", default="1,2,4", help="the K to time, comma-separated; must include 1")
    parser.add_argument("--threads", default="1,2", help="CPU threads per fit, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="iterations per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="timed blocks per K")
    parser.add_argument("--iterations", type=int, default=100, help="budget the images per minute are for")
    parser.add_argument("--out", type=Path, help="results JSON")
    args = parser.parse_args()
    replicas = [int(k) for k in args.replicas.split(",")]
    if 1 not in replicas:
        raise SystemExit("--replicas must include 1 (the separate fits the others are compared with)")

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        times = measure(args.size, replicas, threads, args.steps, args.rounds)
        single = statistics.median(times[1])
        for k in replicas:
            step = statistics.median(times[k])
            rows.append({"threads": threads, "replicas": k, "seconds_per_step": round(step, 4),
                         "all": [round(t, 4) for t in times[k]],
                         "images_per_minute": round(k * 60 / (args.iterations * step), 2),
                         "gain_vs_separate": round(k * single / step, 3)})
    print(f"{'threads':>7} {'K':>3} {'s/step':>8} {'images/min':>10} {'gain':>6}")
    for row in rows:
        print(f"{row['threads']:>7} {row['replicas']:>3} {row['seconds_per_step']:>8.4f} "
              f"{row['images_per_minute']:>10.2f} {row['gain_vs_separate']:>6.3f}")
    if args.out:
        result = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            "command": " ".join(["benchmarks/grouped_pass.py", *sys.argv[1:]]),
            "size": args.size, "steps": args.steps, "rounds": args.rounds, "iterations": args.iterations,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
