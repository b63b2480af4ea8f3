"""Replay shorter budgets on saved traces: what a schedule would return, against a base.

    python benchmarks/schedule_replay.py --base DIR --variants NAME=DIR,... --budgets 800,1000,1500

Each folder holds the ``--traces`` of ``benchmarks/stopping.py`` (ES-WMV fits run to a
fixed length, the rule's score and the running average's PSNR at every iteration). For
every image in the base folder this prints what the engine's ES-WMV rule (warm-up 200,
``--patience``) returns on the base trace, and what each variant returns when its fit is
cut at each budget: the rule still fires if its patience runs out first, and at the budget
the engine returns the average from the rule's best iteration, as a fit does. The ratio is
iterations times the trace's seconds per iteration (which include the trace's per-iteration
snapshot, so they are only a guide: time the fits with ``time_to_result.py``).

A base trace that ends before its rule fires stands for a fit cut there: the base's result
and time are then those at the trace's end.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np


@functools.cache
def _stopping_study():
    """``benchmarks/stopping.py``, whose patience replay this cuts at a budget."""
    spec = importlib.util.spec_from_file_location("stopping_study", Path(__file__).with_name("stopping.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay(scores: np.ndarray, psnrs: np.ndarray, budget: int, patience: int, warmup: int) -> tuple[float, int, int]:
    """``(psnr, best iteration, stop iteration)`` of the ES-WMV rule on a fit cut at ``budget``."""
    stop, best, value = _stopping_study().replay(scores[:budget], psnrs[:budget], patience, warmup)
    return float(value), best or stop, stop


def load(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    traces = {}
    for path in sorted(folder.glob("*.npz")):
        data = np.load(path)
        image = path.stem.rsplit("-", 1)[0]  # TASK-SET-IMAGE-RULE -> SET-IMAGE
        for task in ("super-resolve", "inpaint", "denoise"):
            image = image.removeprefix(task + "-")
        traces[image] = (data["scores"], data["psnrs"], float(data["seconds"]) / len(data["psnrs"]))
    return traces


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="traces of the schedule to compare against")
    parser.add_argument("--variants", required=True, help="NAME=DIR,... traces of the schedules to replay")
    parser.add_argument("--budgets", default="800,1000,1500")
    parser.add_argument("--patience", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    options = parser.parse_args(argv)
    budgets = [int(b) for b in options.budgets.split(",")]
    base = load(options.base)
    variants = {}
    for item in options.variants.split(","):
        name, _, folder = item.partition("=")
        variants[name] = load(Path(folder))
    gains: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for image, (scores, psnrs, seconds) in base.items():
        value, best, stop = replay(scores, psnrs, 10**9, options.patience, options.warmup)
        print(f"{image}: base {value:.2f} dB (best {best}, stop {stop} of {len(psnrs)})")
        for name, traces in variants.items():
            if image not in traces:
                continue
            v_scores, v_psnrs, v_seconds = traces[image]
            cells = []
            for budget in budgets:
                if budget > len(v_psnrs):
                    continue
                v_value, v_best, v_stop = replay(v_scores, v_psnrs, budget, options.patience, options.warmup)
                ratio = v_stop * v_seconds / (stop * seconds)
                gains.setdefault((name, budget), []).append((v_value - value, ratio))
                cells.append(f"@{budget}: {v_value:.2f} ({v_value - value:+.2f}, {v_stop / stop:.2f}x iterations, "
                             f"{ratio:.2f}x time)")
            print(f"  {name:8s} " + "  ".join(cells))
    print("\nmean (worst) change in dB and mean time ratio, over the images both have:")
    for (name, budget), rows in gains.items():
        deltas = np.array([r[0] for r in rows])
        ratios = np.array([r[1] for r in rows])
        print(f"  {name:8s} @{budget:<5d} n={len(rows)}  {deltas.mean():+.3f} ({deltas.min():+.2f})  {ratios.mean():.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
