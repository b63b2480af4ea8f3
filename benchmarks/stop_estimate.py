"""How well does a running fit know when its automatic stop will come?

    python benchmarks/stop_estimate.py --record --out benchmarks/results/stop-estimate/traces-128.json
    python benchmarks/stop_estimate.py --from-traces benchmarks/results/stop-estimate/traces-128.json

The progress bar of the command line and the widget's ETA count to ``Snapshot.expected_stop``.
This script records, for default denoising fits, the stopping rule's score at every
check (the held-out error the rule watches, its best iteration so far, the seconds since
the call) and where the fit stopped; then it replays every estimator of the stop in
:data:`ESTIMATORS` over each trace, check by check, as a fit would have shown it, and
reports:

* the error of the estimate (estimate minus actual stop, in iterations) when the fit was
  a quarter, half and three quarters of the way to its stop;
* how often the bar would step back (its total grew by more than the iterations done
  since the previous check, so its percentage fell).

Every fit runs in this process, one after the other, with PyTorch's threads as they are.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


# -- recording ------------------------------------------------------------------------------


def record_fit(observed8: np.ndarray, seed: int = 0, task: str = "denoise", **settings) -> dict:
    """One fit of ``task`` at its defaults; the rule's state at every check, as the fit loop saw it."""
    from napari_dip.engine import stopping
    from napari_dip.restore import iter_restore

    checks = []
    noise = []
    start = time.perf_counter()
    original = stopping._BestTracker.should_stop

    def watched(self, iteration):
        verdict = original(self, iteration)
        if hasattr(self, "score_noise"):
            noise.append(self.score_noise())
        score = None if self.last_score is None else float(self.last_score)
        # The held-out error is smoothed from the first iteration on, warm-up included.
        current = getattr(self, "smoothed", None)
        checks.append({"iteration": iteration, "score": score, "best": self.best_iteration(),
                       "current": None if current is None else float(current),
                       "seconds": time.perf_counter() - start, "stop": bool(verdict)})
        return verdict

    stopping._BestTracker.should_stop = watched
    try:
        final = None
        for final in iter_restore(task, observed8, seed=seed, snapshot_every=None, **settings):
            pass
    finally:
        stopping._BestTracker.should_stop = original
    settings = final.settings or {}
    return {"checks": checks, "shape": list(observed8.shape), "stopped_at": final.iteration, "best_iteration": final.best_iteration,
            "stop_reason": final.stop_reason, "seconds": time.perf_counter() - start,
            "budget": final.iterations, "stopping": (settings.get("fit") or {}).get("stopping"),
            "check_every": (settings.get("fit") or {}).get("check_every"), "preset": settings.get("preset"),
            "device": settings.get("device"),
            "score_noise": noise[-1] if noise else None}


def record(options) -> None:
    import torch

    import time_to_result

    quality = time_to_result._load_quality()
    data = Path(options.data)
    traces = []

    def write():
        # After every fit: a run cut short (a GPU lease's time limit) keeps what it has.
        out = {"command": " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
               # Each trace names the device its fit ran on; a GPU's model here.
               "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               "torch": torch.__version__, "threads": torch.get_num_threads(), "traces": traces}
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        Path(options.out).write_text(json.dumps(out, indent=1) + "\n")

    write()  # a file even if no fit runs, for --from-traces to read

    for size in options.sizes:
        for set_name in options.sets:
            images = quality.list_images(data, set_name, None)
            picked = [(n, p) for n, p in images if min(quality.load_uint8(p).shape[:2]) >= size][: options.images]
            for name, path in picked:
                clean8 = quality.centre_crop(quality.load_uint8(path), size)
                clean = quality.to_unit(clean8)
                if options.task == "inpaint":
                    # Half the pixels missing at random, as time_to_result.py's inpainting case.
                    holes = quality.random_mask(clean8.shape[:2], 0.5, quality.image_seed(0, set_name, name))
                    damaged = np.where(holes if clean8.ndim == 2 else holes[..., None], 0, clean8).astype(np.uint8)
                    trace = record_fit(damaged, task="inpaint", mask=holes, device=options.device)
                    trace["case"] = f"inpaint {set_name}/{name} {size}² 50 %"
                    traces.append(trace)
                    print(f"{trace['case']}: stopped at {trace['stopped_at']} ({trace['stop_reason']}), "
                          f"result from {trace['best_iteration']}, {trace['seconds']:.1f} s", flush=True)
                    write()
                    continue
                for sigma in options.sigmas:
                    noisy = quality.add_gaussian_noise(clean, sigma / 255, quality.image_seed(0, set_name, name, sigma))
                    noisy8 = np.round(noisy * 255).astype(np.uint8)
                    trace = record_fit(noisy8, device=options.device,
                                       **({"recorrupt": False} if options.no_recorrupt else {}))
                    trace["case"] = f"{set_name}/{name} {size}² σ{sigma:g}" + (" paper's way" if options.no_recorrupt else "")
                    traces.append(trace)
                    print(f"{trace['case']}: stopped at {trace['stopped_at']} ({trace['stop_reason']}), "
                          f"result from {trace['best_iteration']}, {trace['seconds']:.1f} s", flush=True)
                    write()
    print(f"wrote {options.out}")


# -- replaying estimators -------------------------------------------------------------------


def _engine_estimate(checks_so_far, trace):
    """The engine's estimate (:func:`napari_dip.engine.stopping.expected_stop`) from the
    rule's history as the fit loop keeps it (traces recorded before the history kept the
    warm-up's scores have only the scores after it)."""
    from napari_dip.engine.stopping import StoppingConfig, expected_stop

    config = StoppingConfig(**{k: v for k, v in trace["stopping"].items() if k in StoppingConfig.__dataclass_fields__})
    last = checks_so_far[-1]
    history = []
    for check in checks_so_far:
        score = check.get("current", check["score"])
        if score is not None:
            history.append((check["iteration"], score))
    return expected_stop(config, last["iteration"], last["best"], trace["budget"], trace["check_every"], history,
                         trace["score_noise"])


def _patience(checks_so_far, trace):
    """Where the patience runs out if no new best comes (the engine's estimate before 2026-11-27)."""
    from napari_dip.engine.stopping import StoppingConfig, patience_stop

    config = StoppingConfig(**{k: v for k, v in trace["stopping"].items() if k in StoppingConfig.__dataclass_fields__})
    last = checks_so_far[-1]
    return patience_stop(config, last["iteration"], last["best"], trace["budget"], trace["check_every"])


def _held(estimator, hold: int):
    """``estimator``'s estimate, kept until it moves by more than ``hold`` iterations (or
    falls behind best + patience): fewer, larger moves of the bar."""

    def estimate(checks_so_far, trace):
        shown = None
        for index in range(len(checks_so_far)):
            so_far = checks_so_far[: index + 1]
            new = estimator(so_far, trace)
            if shown is None or abs(new - shown) > hold or shown < _patience(so_far, trace):
                shown = new
        return shown

    return estimate


ESTIMATORS = {"best+patience": _patience, "engine": _engine_estimate,
              "engine-hold50": _held(_engine_estimate, 50), "engine-hold100": _held(_engine_estimate, 100)}


def replay(trace: dict, estimator) -> dict:
    checks = trace["checks"]
    stop = trace["stopped_at"]
    estimates = []
    for index in range(len(checks)):
        estimates.append((checks[index]["iteration"], estimator(checks[: index + 1], trace)))
    at = {}
    for fraction in (0.25, 0.5, 0.75):
        iteration = min(estimates, key=lambda e: abs(e[0] - fraction * stop))
        at[fraction] = iteration[1] - stop
    # The bar's percentage at each check, and by how many points it fell where it did.
    falls = []
    for (i0, e0), (i1, e1) in zip(estimates, estimates[1:]):
        if e0 > 0 and e1 > 0 and i1 / e1 < i0 / e0 - 1e-9:
            falls.append(100 * (i0 / e0 - i1 / e1))
    return {"errors": at, "steps_back": len(falls), "falls": falls, "checks": len(estimates)}


def evaluate(options) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    rows = []
    for path in options.from_traces:
        rows.extend(json.loads(Path(path).read_text())["traces"])
    names = options.estimators or list(ESTIMATORS)
    print(f"{len(rows)} fits; error of the estimated stop (estimate - actual, iterations) at 25 / 50 / 75 % of "
          "the way, and how often the bar's percentage fell")
    header = "| fit | stopped at | " + " | ".join(names) + " |"
    print(header)
    print("|" + "---|" * (2 + len(names)))
    totals = {n: {"abs": {0.25: [], 0.5: [], 0.75: []}, "back": 0, "checks": 0, "falls": []} for n in names}
    for trace in rows:
        cells = []
        for name in names:
            result = replay(trace, ESTIMATORS[name])
            errors = result["errors"]
            for fraction, error in errors.items():
                totals[name]["abs"][fraction].append(abs(error) / trace["stopped_at"])
            totals[name]["back"] += result["steps_back"]
            totals[name]["falls"] += result["falls"]
            totals[name]["checks"] += result["checks"]
            cells.append(" / ".join(f"{errors[f]:+d}" for f in (0.25, 0.5, 0.75)) + f", back {result['steps_back']}")
        print(f"| {trace['case']} | {trace['stopped_at']} | " + " | ".join(cells) + " |")
    print()
    print("| estimator | median abs. error / stop at 25 % | at 50 % | at 75 % | percentage fell / checks "
          "| median fall | largest fall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        t = totals[name]
        medians = [f"{100 * float(np.median(t['abs'][f])):.0f} %" for f in (0.25, 0.5, 0.75)]
        falls = t["falls"]
        sizes = (f"{np.median(falls):.1f} points | {max(falls):.1f} points" if falls else "- | -")
        print(f"| {name} | " + " | ".join(medians) + f" | {t['back']} / {t['checks']} | {sizes} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="run the fits and write their traces to --out")
    parser.add_argument("--from-traces", nargs="+", help="replay the estimators over these trace files")
    parser.add_argument("--estimators", type=lambda s: s.split(","), help=f"from {', '.join(ESTIMATORS)}")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[128])
    parser.add_argument("--sigmas", type=lambda s: [float(x) for x in s.split(",")], default=[25.0, 50.0])
    parser.add_argument("--sets", type=lambda s: s.split(","), default=["Set12"])
    parser.add_argument("--images", type=int, default=6, help="per set and size")
    parser.add_argument("--no-recorrupt", action="store_true", help="fit the paper's way (fixed noise input)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument("--task", choices=("denoise", "inpaint"), default="denoise",
                        help="inpaint: half the pixels of each crop missing at random (--sigmas unused)")
    parser.add_argument("--out", default="benchmarks/results/stop-estimate/traces.json")
    options = parser.parse_args(argv)
    if options.record:
        record(options)
    if options.from_traces:
        evaluate(options)
    if not options.record and not options.from_traces:
        parser.error("give --record, --from-traces or both")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
