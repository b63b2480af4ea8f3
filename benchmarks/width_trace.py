"""PSNR trajectory of one denoising fit per network variant, with a stop that never fires.

    python benchmarks/width_trace.py --widths 32,48 --out benchmarks/results/width-trace-set12-01.json
    python benchmarks/width_trace.py --variants w32,w32+lr=0.02,w32+avg=0.98 --threads 1

The case is time_to_result.py's first grey one (Set12/01, 128² centre crop, sigma 25, its
noise seed, the noisy image rounded to 8 bits). Each variant is fitted with the default
held-out validation but a patience longer than the budget, so the fit runs on and the
running average's PSNR every 25 iterations shows where the peak is and how high, apart
from where the default stop would have ended the fit. The trace ends one snapshot before
the budget: the last snapshot holds the held-out rule's pick (``returned``: its iteration
and PSNR), not the average at the end. (``width-trace-set12-01.json`` was written before
this was kept apart: its last point, at 1800, is that pick.)

A variant joins with "+": ``w<N>`` (N channels per scale, the ``fast`` layout; 32 if not
given), ``lr=<x>`` (Adam's learning rate), ``avg=<x>`` (weight of the running average of
outputs), ``jitter=<x>`` (input jitter). ``--widths 32,48`` is ``--variants w32,w48``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

#: Variant keys and the ``iter_restore`` argument each sets.
SETTINGS = {"lr": "learning_rate", "avg": "average_weight", "jitter": "reg_noise_std"}


def parse_variant(text: str) -> tuple[int, dict]:
    """``"w16+lr=0.02"`` -> ``(16, {"learning_rate": 0.02})``."""
    width, settings, seen = 32, {}, set()
    for part in text.split("+"):
        key, _, value = part.partition("=")
        name = "w" if not value and key[:1] == "w" else key
        if name in seen:
            raise SystemExit(f"variant {text!r} sets {name!r} twice")
        seen.add(name)
        try:
            if name == "w" and key[1:].isdigit() and int(key[1:]) > 0:
                width = int(key[1:])
            elif key in SETTINGS and value and float(value) >= 0:
                settings[SETTINGS[key]] = float(value)
            else:
                raise ValueError(part)
        except ValueError:
            raise SystemExit(f"unknown variant part {part!r}: use w<N>, lr=<x>, avg=<x> or jitter=<x>") from None
    return width, settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--widths", help="shorthand for --variants w<N>,...")
    parser.add_argument("--variants", help="comma-separated variants (default: w32,w48)")
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's own)")
    parser.add_argument("--iterations", type=int, default=1800)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    if options.widths and options.variants:
        parser.error("give --widths or --variants, not both")
    variants = [f"w{w}" for w in options.widths.split(",")] if options.widths else (options.variants or "w32,w48").split(",")
    parsed = {variant: parse_variant(variant) for variant in variants}  # fail before any fit
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time_to_result

    from napari_dip.engine.stopping import StoppingConfig
    from napari_dip.restore import iter_restore

    # time_to_result's own first grey case, so the noise is exactly the one it timed.
    quality = time_to_result._load_quality()
    case = argparse.Namespace(data=options.data, seed=0, sizes=[128], tasks=["denoise"], colours=["grey"],
                              sigmas=[25.0])
    name, _, noisy8, _, evaluate, _ = next(time_to_result.cases(quality, case))
    traces, results = {}, {}
    for variant, (width, settings) in parsed.items():
        trace, returned = [], None
        for snap in iter_restore("denoise", noisy8, preset="fast", channels=width, device="cpu", seed=0,
                                 threads=options.threads, snapshot_every=25, iterations=options.iterations,
                                 stopping=StoppingConfig(rule="validation", patience=10 * options.iterations),
                                 **settings):
            if snap.done:
                # The last snapshot holds the result the stop would return (its best
                # iteration's), not the average at the budget's end: kept apart.
                returned = [snap.best_iteration, round(evaluate(snap.average), 3)]
            else:
                trace.append([snap.iteration, round(evaluate(snap.average), 3)])
        peak = max(trace, key=lambda row: row[1])
        within = next(i for i, p in trace if p >= peak[1] - 0.1)
        print(f"{variant}: peak {peak[1]:.2f} dB at {peak[0]}, within 0.1 dB of it from {within}; every 200: "
              + ", ".join(f"{i}: {p:.2f}" for i, p in trace if i % 200 == 0), flush=True)
        # Keys as before for plain widths ("32"), so earlier result files read the same.
        key = variant[1:] if variant[1:].isdigit() else variant
        traces[key] = trace
        results[key] = returned
    if options.out:
        options.out.write_text(json.dumps({"case": name, "command": " ".join(sys.argv), "threads": options.threads,
                                           "traces": traces, "returned": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
