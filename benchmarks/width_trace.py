"""PSNR trajectory of one denoising fit per network width, with a stop that never fires.

    python benchmarks/width_trace.py --widths 32,48 --out benchmarks/results/width-trace-set12-01.json

The case is time_to_result.py's first grey one (Set12/01, 128² centre crop, sigma 25, its
noise seed, the noisy image rounded to 8 bits). Each width is fitted with the default
held-out validation but a patience longer than the budget, so the fit runs on and the
running average's PSNR every 25 iterations shows where the peak is and how high, apart
from where the default stop would have ended the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--widths", default="32,48")
    parser.add_argument("--iterations", type=int, default=1800)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time_to_result

    from napari_dip.engine.networks import FAST
    from napari_dip.engine.stopping import StoppingConfig
    from napari_dip.restore import iter_restore

    # time_to_result's own first grey case, so the noise is exactly the one it timed.
    quality = time_to_result._load_quality()
    case = argparse.Namespace(data=options.data, seed=0, sizes=[128], tasks=["denoise"], colours=["grey"],
                              sigmas=[25.0])
    name, _, noisy8, _, evaluate, _ = next(time_to_result.cases(quality, case))
    traces = {}
    for width in (int(w) for w in options.widths.split(",")):
        trace = []
        for snap in iter_restore("denoise", noisy8, network=FAST.with_width(width), device="cpu", seed=0,
                                 snapshot_every=25, iterations=options.iterations,
                                 stopping=StoppingConfig(rule="validation", patience=10 * options.iterations)):
            trace.append([snap.iteration, round(evaluate(snap.average), 3)])
        peak = max(trace, key=lambda row: row[1])
        print(f"{width} channels: peak {peak[1]:.2f} dB at {peak[0]}; every 100: "
              + ", ".join(f"{i}: {p:.2f}" for i, p in trace if i % 100 == 0), flush=True)
        traces[width] = trace
    if options.out:
        options.out.write_text(json.dumps({"case": name, "command": " ".join(sys.argv),
                                           "traces": traces}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
