"""Seconds per fit step of network variants ("levers"), all measured in one process.

    python benchmarks/step_levers.py --sizes 128,256 --threads 1,2
    python benchmarks/step_levers.py --sizes 256 --threads 1 --profile base   # where a step goes

Each lever is a :class:`~napari_dip.engine.networks.SkipNetConfig` change of the ``fast``
preset's network (``--preset``). For every size and thread count, one
:class:`~napari_dip.engine.fit.Fitter` per lever is built on the same random grey image
(denoising settings, no automatic stop) and their ``run`` generators are advanced in turn,
``--steps`` iterations at a time, the order reversed every round, so that a change in the
machine's load hits every lever alike. The table gives the median seconds per step and the
ratio to ``base`` measured in the same rounds.

Levers are :data:`LEVERS` joined with ``+``, plus ``w<N>`` (every scale ``N`` channels wide)
and ``s<N>`` (the first ``N`` scales only).

``--task super-resolve`` or ``--task inpaint`` times that task's network of the preset
instead, each fit on the same random image (a quarter of the side at x4, or half its
pixels missing); timing only.

``--recorrupt`` starts from the preset's recorruption network instead and fits by
recorruption (timing: at sigma 25; quality: the engine recorrupts by default with ``fast``).

``--quality`` instead fits Set12 (or ``--set CSet9``, colour) centre crops (``--crop``,
Gaussian noise ``--sigma`` rounded to 8 bits, as ``quality.py`` makes them) with each lever to the automatically stopped result
(the engine's default rule) and prints PSNR, seconds and iterations per image and the mean
difference to ``base``; ``--skip``/``--images`` pick a chunk, ``--merge`` joins chunks' JSON.

``--profile LEVER`` instead runs PyTorch's profiler over a few steps and prints the
operators by self time and which convolution implementation each convolution used
(oneDNN, ``mkldnn_convolution``, or PyTorch's own ``slow_conv2d`` / ``thnn_conv2d``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Each lever as SkipNetConfig overrides; combinations join names with "+".
LEVERS = {
    "base": {},
    "zeros": {"padding": "zeros"},
    "nearest": {"upsample_mode": "nearest"},
    "nomerge": {"merge_norm": False},
    "nobias": {"conv_bias": False},
    "nonorm": {"normalization": "none"},
}
#: Levers of the fit, not the network (timing only): ``unfused`` steps with PyTorch's
#: per-tensor Adam instead of the fused kernel the engine uses on the CPU.
FIT_LEVERS = ("unfused",)


def lever_config(base, name: str):
    """``base`` with the named levers; besides :data:`LEVERS`, ``w<N>`` makes every scale
    ``N`` channels wide, ``s<N>`` keeps the first ``N`` scales, and ``FIELD=VALUE`` changes
    one field of the network (``channels_up=16:48:48:48:48``: ``benchmarks/network_fields.py``)."""
    overrides = {}
    width = scales = None
    fields = []
    for part in name.split("+"):
        if "=" in part:
            fields.append(part)
        elif part.startswith("w") and part[1:].isdigit():
            width = int(part[1:])
        elif part.startswith("s") and part[1:].isdigit():
            scales = int(part[1:])
        elif part in LEVERS:
            overrides.update(LEVERS[part])
        elif part not in FIT_LEVERS:
            raise SystemExit(f"unknown lever {part!r}; known: {', '.join((*LEVERS, *FIT_LEVERS))}, "
                             "w<channels>, s<scales>, FIELD=VALUE")
    config = replace(base, **overrides)
    if scales is not None:
        config = replace(config, **{field: getattr(config, field)[:scales]
                                    for field in ("channels_down", "channels_up", "channels_skip")})
    if width is not None:
        config = config.with_width(width)
    # Last, so that a field named outright wins over w<N> and s<N>.
    return _network_fields().network_overrides(config, fields)


@functools.cache
def _network_fields():
    """``benchmarks/network_fields.py``, loaded once (every lever's config asks for it)."""
    spec = importlib.util.spec_from_file_location("network_fields", ROOT / "benchmarks" / "network_fields.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_fitter(network, size: int, threads: int, iterations: int, recorrupt: bool = False,
                unfused: bool = False, task: str = "denoise"):
    import torch

    from napari_dip.arrays import prepare_image
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    rng = np.random.default_rng(0)
    # The restored image has ``size`` pixels a side: the observation is smaller at x4.
    side = size // 4 if task == "super-resolve" else size
    image, layout, _ = prepare_image(rng.uniform(0, 1, (side, side)).astype(np.float32))
    task_kwargs = {"super-resolve": {"factor": 4},
                   "inpaint": {"mask": rng.random((size, size)) < 0.5, "warn_inverted": False}}.get(task, {})
    _, config = settings_for(task, "fast", network=network, stopping="none", threads=threads,
                             iterations=iterations, device="cpu", seed=0, recorrupt=recorrupt,
                             noise_sigma=25 / 255 if recorrupt else None, factor=task_kwargs.get("factor"))
    fitter = Fitter(image, forward_model_for(task, layout, **task_kwargs), network, config)
    if unfused:
        fitter.optimizer = torch.optim.Adam(fitter.network.parameters(), lr=config.learning_rate, fused=False)
    return fitter


def measure(base, levers, size, threads, steps, rounds, recorrupt=False, task="denoise") -> dict:
    fitters = {name: make_fitter(lever_config(base, name), size, threads, steps * (rounds + 1), recorrupt,
                                 unfused="unfused" in name.split("+"), task=task)
               for name in levers}
    runs = {name: fitter.run(snapshot_every=steps) for name, fitter in fitters.items()}
    times = {name: [] for name in levers}
    for name in levers:  # warm-up: the first block of each, untimed
        next(runs[name])
    for round_ in range(rounds):
        order = levers if round_ % 2 == 0 else levers[::-1]
        for name in order:
            start = time.perf_counter()
            next(runs[name])
            times[name].append((time.perf_counter() - start) / steps)
    for run in runs.values():
        run.close()
    return {name: {"seconds": statistics.median(t), "all": t,
                   "parameters": sum(p.numel() for p in fitters[name].network.parameters())}
            for name, t in times.items()}


def profile(base, lever: str, size: int, threads: int, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    fitter = make_fitter(lever_config(base, lever), size, threads, 3 * steps)
    run = fitter.run(snapshot_every=steps)
    next(run)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        next(run)
    run.close()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    kinds = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if any(k in event.key for k in ("mkldnn_convolution", "slow_conv2d_forward", "thnn_conv2d", "_convolution_depthwise")):
            kinds.setdefault(event.key, []).append((event.count // steps, event.input_shapes[:2],
                                                    event.self_cpu_time_total / steps / 1e3))
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / steps / 1e3
    print(f"convolution implementations per step ({lever}, {size}², {threads} threads; step self time {total_ms:.1f} ms):")
    for key, rows in kinds.items():
        for count, shapes, ms in rows:
            print(f"  {key:32s} x{count}  input/weight {shapes}  {ms:.2f} ms self")


def quality_fits(base, levers, options) -> list[dict]:
    import importlib.util

    from napari_dip.restore import iter_restore

    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    images = quality.list_images(Path(options.data), options.set, options.skip + options.images)[options.skip:]
    setting = f"sigma{options.sigma:g}"
    rows = []
    for index, (name, path) in enumerate(images):
        clean = quality.centre_crop(quality.load_uint8(path), options.crop) / 255.0
        noisy = quality.add_gaussian_noise(clean, options.sigma / 255, quality.image_seed(0, options.set, name, setting))
        noisy8 = np.rint(noisy * 255.0).astype(np.uint8)
        order = levers if index % 2 == 0 else levers[::-1]
        for lever in order:
            start = time.perf_counter()
            for final in iter_restore("denoise", noisy8, preset=options.preset, network=lever_config(base, lever),
                                      device="cpu", seed=options.seed, snapshot_every=None,
                                      threads=options.fit_threads):
                pass
            seconds = time.perf_counter() - start
            row = {"image": f"{options.set}/{name}", "sigma": options.sigma, "lever": lever,
                   "seed": options.seed, "psnr": quality.psnr(clean, quality.to_unit(final.average)), "seconds": seconds, "best_iteration": final.best_iteration, "iteration": final.iteration}
            rows.append(row)
            print(f"{options.set}/{name} {lever:32s} {row['psnr']:.2f} dB {seconds:6.1f} s  "
                  f"best {row['best_iteration']} stop {row['iteration']}", flush=True)
    return rows


def quality_table(rows: list[dict]) -> str:
    def case(row):  # rows written before --set and --sigma were recorded are Set12 at sigma 25
        image = row["image"] if "/" in row["image"] else f"Set12/{row['image']}"
        image = image if row.get("sigma", 25.0) == 25.0 else f"{image} σ{row['sigma']:g}"
        return f"{image} seed {row['seed']}" if row.get("seed", 0) else image

    levers = list(dict.fromkeys(r["lever"] for r in rows))
    images = list(dict.fromkeys(case(r) for r in rows))
    by = {(case(r), r["lever"]): r for r in rows}
    lines = ["| lever | " + " | ".join(images) + " | mean PSNR | mean Δ vs base | "
             "mean seconds | time vs base |", "|---|" + "---:|" * (len(images) + 4)]
    base = [by[(i, "base")] for i in images]
    for lever in levers:
        fits = [by[(i, lever)] for i in images]
        psnr = statistics.mean(f["psnr"] for f in fits)
        delta = psnr - statistics.mean(f["psnr"] for f in base)
        seconds = statistics.mean(f["seconds"] for f in fits)
        ratio = sum(f["seconds"] for f in base) / sum(f["seconds"] for f in fits)
        cells = " | ".join(f"{f['psnr']:.2f} ({f['best_iteration']}/{f['iteration']})" for f in fits)
        lines.append(f"| {lever} | {cells} | {psnr:.2f} | {delta:+.3f} | {seconds:.1f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--levers", default="base,zeros,nearest,nomerge,nobias,zeros+nearest+nomerge+nobias")
    parser.add_argument("--preset", default="fast", choices=("fast", "paper"))
    parser.add_argument("--task", default="denoise", choices=("denoise", "super-resolve", "inpaint"),
                        help="time this task's network (super-resolution x4); denoise only with --quality, --recorrupt")
    parser.add_argument("--recorrupt", action="store_true",
                        help="levers of the preset's recorruption network, fitted by recorruption (timing: at sigma 25)")
    parser.add_argument("--steps", type=int, default=10, help="iterations per timed block")
    parser.add_argument("--rounds", type=int, default=4, help="timed blocks per lever")
    parser.add_argument("--profile", metavar="LEVER", help="profile one lever instead of timing")
    parser.add_argument("--quality", action="store_true", help="PSNR of automatically stopped fits per lever")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--set", default="Set12", help="--quality: the image set (Set12 grey, CSet9 colour)")
    parser.add_argument("--images", type=int, default=4, help="--quality: images of the set")
    parser.add_argument("--skip", type=int, default=0, help="--quality: leave out the first N images")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0, help="--quality: the fits' seed (network and input)")
    parser.add_argument("--fit-threads", type=int, default=None, help="--quality: threads per fit (default: torch's)")
    parser.add_argument("--merge", type=Path, nargs="+", help="print the quality table of these JSON files")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the engine to import")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.merge:
        print(quality_table([row for path in args.merge for row in json.loads(path.read_text())["rows"]]))
        return 0
    sys.path.insert(0, str(args.src))
    import torch

    from napari_dip.engine.networks import NETWORK_PRESETS, RECORRUPTION_NETWORKS

    if args.task != "denoise" and (args.quality or args.recorrupt):
        raise SystemExit("--quality and --recorrupt are for denoising; --task times the other tasks' networks")
    networks = NETWORK_PRESETS[args.preset]
    base = RECORRUPTION_NETWORKS[args.preset] if args.recorrupt else networks.get(args.task, networks["default"])
    sizes = [int(s) for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.profile:
        for size in sizes:
            for threads in thread_counts:
                profile(base, args.profile, size, threads, args.steps)
        return 0
    levers = args.levers.split(",")
    if levers[0] != "base":
        levers.insert(0, "base")
    if args.quality and any(part in FIT_LEVERS for lever in levers for part in lever.split("+")):
        raise SystemExit(f"{', '.join(FIT_LEVERS)} are timing levers: --quality fits through the engine's own optimiser")
    if args.quality:
        rows = quality_fits(base, levers, args)
        if args.out:
            args.out.write_text(json.dumps({"date": str(date.today()), "torch": torch.__version__,
                                            "command": " ".join(sys.argv), "rows": rows}, indent=1))
        print(quality_table(rows))
        return 0
    rows = []
    print(f"{args.preset} {'recorruption ' if args.recorrupt else ''}{args.task} network, grey, {args.steps} steps x {args.rounds} rounds per lever, torch {torch.__version__}, "
          f"{date.today()}")
    print("| size | threads | lever | s/step | vs base |")
    print("|---|---:|---|---:|---:|")
    for size in sizes:
        for threads in thread_counts:
            result = measure(base, levers, size, threads, args.steps, args.rounds, args.recorrupt, args.task)
            for name in levers:
                ratio = result["base"]["seconds"] / result[name]["seconds"]
                rows.append({"size": size, "threads": threads, "lever": name, **result[name], "speedup": ratio})
                print(f"| {size}² | {threads} | {name} | {result[name]['seconds']:.4f} | {ratio:.2f}x |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"date": str(date.today()), "torch": torch.__version__,
                                        "command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
