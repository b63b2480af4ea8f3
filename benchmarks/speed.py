"""Speed and peak memory of one DIP fit step: the engine's loop against a plain eager loop.

    python benchmarks/speed.py                      # paper network, 256 and 512 px, auto device
    python benchmarks/speed.py --sizes 128 --iterations 3   # a quick look
    python benchmarks/speed.py --time-to-result --baseline REV ...   # benchmarks/time_to_result.py

Both variants fit the same network (the paper's 2.2 M-parameter denoising network by
default) to the same random RGB image from the same seed:

* ``plain``: the loop as usually written: float32, default memory layout, a fresh jitter
  tensor each step, and ``loss.item()`` every iteration (for logging and backtracking),
  which makes a GPU wait for the host once per step.
* ``engine``: :class:`napari_dip.engine.fit.Fitter` as the API runs it: channels-last
  activations, jitter drawn into a preallocated tensor, losses kept on the device and read
  every ``check_every`` steps, cuDNN autotuning on CUDA; float32 unless a ``-bf16``/``-fp16``
  variant is asked for.

Every measurement runs in its own process, so peak memory is per variant (CUDA: peak
allocated by PyTorch; CPU: peak resident set above the process's size before the network
was built). Variants alternate (A B, B A, ...) so that drift on a shared machine hits
both; the table shows the median over repeats and the ratio plain / engine of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(variant: str, size: int, warmup: int, iterations: int, device_name: str, network: str, threads: int):
    import resource

    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import torch
    from torch.nn import functional as F

    from napari_dip.engine.devices import resolve_device
    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.networks import NETWORK_PRESETS, SkipNet

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    cfg = NETWORK_PRESETS[network]["default"]
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (3, size, size)).astype(np.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if variant == "plain":
        torch.manual_seed(0)
        net = SkipNet(cfg, 3).to(device)
        z = (torch.rand(1, cfg.input_channels, size, size) * cfg.input_scale).to(device)
        y = torch.as_tensor(target)[None].to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        average = None

        def step():
            nonlocal average
            out = net(z + torch.randn_like(z) / 30)
            loss = F.mse_loss(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            average = out.detach() if average is None else 0.99 * average + 0.01 * out.detach()
            return loss.item()

        for _ in range(warmup):
            step()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        seconds = (time.perf_counter() - start) / iterations
    else:
        options = engine_options(variant)
        config = FitConfig(iterations=warmup + iterations, device=str(device), seed=0, **options["fit"])
        fitter = Fitter(target, Identity(), cfg, config)
        if options["no_autotune"]:
            # The fit turns cuDNN autotuning on when it starts: keep it from doing so.
            import napari_dip.engine.fit as fit_module

            fit_module.autotune_convolutions = lambda device: None
            torch.backends.cudnn.benchmark = False
        marks = {}
        for snap in fitter.run(snapshot_every=warmup):
            marks[snap.iteration] = snap.elapsed
        seconds = (marks[warmup + iterations] - marks[warmup]) / iterations

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(json.dumps({"seconds_per_iteration": seconds, "peak_bytes": peak, "device": name, "torch": torch.__version__}))


#: ``engine`` variants: ``engine`` followed by any of these, e.g. ``engine-bf16-nostop``, to
#: take the engine's step apart on a GPU (what its 17 ms against a plain loop's 12 ms at
#: 256² on an H200 were made of was not measured, 2026-11-26).
ENGINE_SWITCHES = {
    "bf16": {"precision": "bfloat16"},
    "fp16": {"precision": "float16"},
    "nostop": {"stopping": "none"},     # no held-out validation work in the step
    "nchw": {"channels_last": False},   # the default memory layout (since 2026-11-26)
    "cl": {"channels_last": True},      # channels-last, the CUDA default before 2026-11-26
    "graphs": {"cuda_graphs": True},    # the whole step captured once as a CUDA graph, replayed
    "nographs": {"cuda_graphs": False}, # eager steps on CUDA (graphs are the CUDA default)
    "compile": {"compile": True},
    "nobench": {},                      # cuDNN autotuning off (set after the Fitter is made)
}


def engine_options(variant: str) -> dict:
    """FitConfig fields (and whether autotuning is off) for an ``engine[-switch...]`` name."""
    from napari_dip.engine.stopping import StoppingConfig

    name, *switches = variant.split("-")
    unknown = [w for w in switches if w not in ENGINE_SWITCHES]
    if name != "engine" or unknown:
        raise SystemExit(f"unknown variant {variant!r}: plain, or engine with any of -{', -'.join(ENGINE_SWITCHES)}")
    fit = {}
    for switch in switches:
        fit.update(ENGINE_SWITCHES[switch])
    if fit.get("stopping") == "none":
        fit["stopping"] = StoppingConfig(rule="none")
    return {"fit": fit, "no_autotune": "nobench" in switches}


def _measure(args, variant: str, size: int) -> dict:
    command = [
        sys.executable, __file__, "--worker", variant, "--sizes", str(size), "--warmup", str(args.warmup),
        "--iterations", str(args.iterations), "--device", args.device, "--network", args.network,
        "--threads", str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} at {size}px failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--time-to-result" in argv:  # wall time to the stopped result, not per step
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import time_to_result

        return time_to_result.main([a for a in argv if a != "--time-to-result"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per variant and size")
    parser.add_argument("--variants", default=None,
                        help="comma-separated; default plain,engine (+engine-bf16 on CUDA); engine variants take "
                             "switches: engine-bf16, -fp16, -nostop, -nchw, -cl, -nobench, -graphs, -nographs, -compile, combined "
                             "as in engine-nostop-nobench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--network", default="paper", choices=("paper", "fast"))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations % args.warmup:
        parser.error("--iterations must be a multiple of --warmup (the engine snapshots every --warmup steps)")

    if args.worker:
        _worker(args.worker, args.sizes[0], args.warmup, args.iterations, args.device, args.network, args.threads)
        return 0

    if args.variants:
        variants = args.variants.split(",")
        sys.path.insert(0, str(ROOT / "src"))
        for variant in variants:
            if variant != "plain":
                engine_options(variant)  # a typo fails now, not after the first measurements
    else:
        sys.path.insert(0, str(ROOT / "src"))
        from napari_dip.engine.devices import resolve_device

        on_cuda = resolve_device(args.device).type == "cuda"
        variants = ["plain", "engine"] + (["engine-bf16"] if on_cuda else [])

    results = {}
    for size in args.sizes:
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for variant in order:
                result = _measure(args, variant, size)
                results.setdefault((size, variant), []).append(result)
                print(f"  {size}px {variant:12s} {result['seconds_per_iteration']:.3f} s/it "
                      f"{result['peak_bytes'] / 2**30:.2f} GiB", file=sys.stderr)

    device = next(iter(results.values()))[0]["device"]
    torch_version = next(iter(results.values()))[0]["torch"]
    print(f"\n{args.network} network, RGB, {args.iterations} timed iterations after {args.warmup} warm-up, "
          f"median of {args.repeats}; {device}; torch {torch_version}; {date.today()}")
    print("| size | variant | s/iteration | peak memory (GiB) | speed-up over plain |")
    print("|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        plain = statistics.median(r["seconds_per_iteration"] for r in results[(size, variants[0])])
        for variant in variants:
            runs = results[(size, variant)]
            seconds = statistics.median(r["seconds_per_iteration"] for r in runs)
            peak = max(r["peak_bytes"] for r in runs)
            rows.append({"size": size, "variant": variant, "seconds_per_iteration": seconds, "peak_bytes": peak,
                         "speedup": plain / seconds, "runs": runs})
            print(f"| {size}² | {variant} | {seconds:.3f} | {peak / 2**30:.2f} | {plain / seconds:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "torch": torch_version, "date": str(date.today()),
                                        "command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
