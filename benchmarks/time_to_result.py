"""Time to result: wall time from the call to an automatically stopped result, and its PSNR.

    python benchmarks/time_to_result.py --baseline HEAD~5 --sizes 128 --sigmas 25
    python benchmarks/speed.py --time-to-result ...      # the same, from the speed script

What a user waits for is not one step but the whole fit up to the result the stopping rule
picks. For each case this script runs, in the same run and on the same inputs:

* the **current** engine (this checkout's ``src``), and
* the **baseline** engine: ``--baseline REV`` is checked out as a git worktree in a
  temporary folder and imported from there (``PYTHONPATH``), so "before" and "after" are
  measured side by side on the same machine, at the same load,
* each with every ``--configs`` entry: ``preset:NAME`` passes that preset to both engines
  (same network, same schedule), ``default`` passes no preset (what a user gets without
  choosing), and
* BM3D / CBM3D (the optional ``bm3d`` package) for the denoising cases, with the true sigma.

Cases: denoising of Set12 (grey) and CSet9 (colour) centre crops at each size and sigma
(noisy image rounded to 8 bits, as in ``quality.py``), super-resolution x4 of a Set5 crop
and inpainting of a Heide11 crop with 50 % random pixels missing (``--tasks``). Every fit
runs in its own process, one after the other (never two at once: on a 2-core machine
parallel fits slow each other several times), with the same thread count (``--threads``;
0 leaves each engine's own choice). The time is measured inside the process from the call
of ``iter_restore`` to the final snapshot, so the interpreter and torch start-up are
excluded (they are reported apart, as ``startup``).

The table gives seconds, PSNR, the iteration the result came from and where the fit
stopped, and the ratios baseline / current (speed) and DIP / BM3D (time).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the worker: one fit in its own process, with whichever engine PYTHONPATH names --------

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch
from napari_dip.restore import iter_restore
spec = json.loads(sys.argv[1])
if spec["threads"]:
    torch.set_num_threads(spec["threads"])
inputs = np.load(spec["inputs"])
kwargs = {"device": "cpu" if spec["device"] == "cpu" else spec["device"], "seed": spec["seed"], "snapshot_every": None}
if spec["preset"]:
    kwargs["preset"] = spec["preset"]
if spec["iterations"]:
    kwargs["iterations"] = spec["iterations"]
if spec["task"] == "super-resolve":
    kwargs["factor"] = spec["factor"]
if spec["task"] == "inpaint":
    kwargs["mask"] = inputs["mask"]
extra = dict(spec.get("extra") or {})
beta2 = extra.pop("recorruption_adam_beta2", None)
if beta2 is not None:
    # +b2X: Adam's beta2 for every preset's recorrupted fits (the API has no setting for it).
    import napari_dip.engine.presets as presets
    if not hasattr(presets, "RECORRUPTION_ADAM_BETA2"):
        sys.exit("+b2X: this engine has no RECORRUPTION_ADAM_BETA2 (older than 7f48a4d)")
    presets.RECORRUPTION_ADAM_BETA2 = {"paper": beta2, "fast": beta2}
kwargs.update(extra)
startup = time.perf_counter() - t0
start = time.perf_counter()
final = None
for final in iter_restore(spec["task"], inputs["observed"], **kwargs):
    pass
seconds = time.perf_counter() - start
np.save(spec["result"], final.average)
settings = final.settings or {}
if beta2 is not None and (settings.get("fit") or {}).get("adam_beta2") != beta2:
    sys.exit(f"+b2X: the fit ran with beta2 {(settings.get('fit') or {}).get('adam_beta2')}, not {beta2} "
             "(it did not recorrupt, or its noise is photon-limited)")
print(json.dumps({"seconds": seconds, "startup": startup, "iteration": final.iteration,
                  "best_iteration": final.best_iteration, "stop_reason": final.stop_reason,
                  "preset": settings.get("preset"), "threads": torch.get_num_threads(), "device": settings.get("device"),
                  "precision": (settings.get("fit") or {}).get("precision"), "compiled": settings.get("compiled"),
                  "cuda_graphs": settings.get("cuda_graphs"),
                  "recorrupt_sigma": (settings.get("fit") or {}).get("recorrupt_sigma"),
                  "learning_rate": (settings.get("fit") or {}).get("learning_rate"),
                  "adam_beta2": (settings.get("fit") or {}).get("adam_beta2"),
                  "parameters": settings.get("network_parameters")}))
"""


#: ``--configs`` modifiers (``default+bf16``, ``preset:paper+graphs``): the API settings each adds.
MODIFIERS = {
    "bf16": {"precision": "bfloat16"},
    "fp16": {"precision": "float16"},
    "compile": {"compile": True},
    "graphs": {"cuda_graphs": True},
    "nographs": {"cuda_graphs": False},
    # Denoising by recorruption or the paper's way, whatever the preset does by default.
    "recorrupt": {"recorrupt": True},
    "norecorrupt": {"recorrupt": False},
}


def _number(mod: str, prefix: str) -> float | None:
    """``lr0.005`` with prefix ``lr`` -> 0.005; anything else -> ``None``."""
    if not mod.startswith(prefix):
        return None
    try:
        value = float(mod[len(prefix):])
    except ValueError:
        return None
    return value if value > 0 else None


def _modifier(mod: str) -> dict | None:
    """The settings one ``+MODIFIER`` adds, or ``None`` for an unknown one."""
    if mod in MODIFIERS:
        return MODIFIERS[mod]
    if (rate := _number(mod, "lr")) is not None:
        return {"learning_rate": rate}
    if (beta2 := _number(mod, "b2")) is not None and beta2 < 1:
        return {"recorruption_adam_beta2": beta2}
    return None


def parse_config(config: str) -> tuple[str | None, dict]:
    """``preset:NAME`` or ``default``, with ``+MODIFIER``s: the preset (``None``: the
    default) and the extra settings; ``+lrX`` sets the learning rate to X, ``+b2X`` Adam's
    beta2 in recorrupted fits to X (every preset's; the worker sets it in the engine's presets)."""
    base, *mods = config.split("+")
    unknown = [m for m in mods if _modifier(m) is None]
    if unknown or not (base == "default" or base.startswith("preset:")):
        raise SystemExit(f"unknown config {config!r} (preset:NAME or default, "
                         f"+{'/+'.join(MODIFIERS)}/+lrX/+b2X)")
    extra = {}
    for mod in mods:
        extra.update(_modifier(mod))
    return (base.split(":", 1)[1] if base.startswith("preset:") else None), extra


def run_fit(src: Path, spec: dict) -> dict:
    # The engine's src first; what the caller had on PYTHONPATH after it (packages carried
    # to a GPU machine in a folder: without them there every fit failed on a missing
    # PyWavelets, 2026-11-26).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"fit failed ({src}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- cases ----------------------------------------------------------------------------------


def cases(quality, options):
    """Yield ``(name, task, observed, extra_inputs, evaluate, sigma)``."""
    data = Path(options.data)
    seed = options.seed
    for size in options.sizes:
        if "denoise" in options.tasks:
            for set_name, colour in (("Set12", "grey"), ("CSet9", "RGB")):
                if colour not in options.colours:
                    continue
                for name, path in at_least(quality, data, set_name, size, options.images):
                    clean8 = quality.centre_crop(quality.load_uint8(path), size)
                    clean = quality.to_unit(clean8)
                    for sigma in options.sigmas:
                        noisy = quality.add_gaussian_noise(clean, sigma / 255,
                                                           quality.image_seed(seed, set_name, name, sigma))
                        noisy8 = np.round(noisy * 255).astype(np.uint8)
                        yield (f"denoise {set_name}/{name} {side(clean8)} σ{sigma:g}", "denoise", noisy8, {},
                               lambda est, c=clean: quality.psnr(c, quality.to_unit(est)), sigma)
        if "super-resolve" in options.tasks:
            name, path = first_at_least(quality, data, "Set5", size)
            factor = options.factor
            hr8 = quality.crop_to_multiple(quality.centre_crop(quality.load_uint8(path), size), factor)
            lr8 = quality.make_lr(hr8, factor)
            yield (f"SR x{factor} Set5/{name} {side(hr8)} (from {side(lr8)})", "super-resolve", lr8, {},
                   lambda est, h=hr8: quality.metrics_y(quality.to_unit(h), quality.to_unit(est))["psnr"], None)
        if "inpaint" in options.tasks:
            name, path = first_at_least(quality, data, "Heide11", size)
            clean8 = quality.centre_crop(quality.load_uint8(path), size)
            holes = quality.random_mask(clean8.shape[:2], 0.5, quality.image_seed(seed, "Heide11", name))
            damaged = np.where(holes, 0, clean8).astype(np.uint8)
            yield (f"inpaint Heide11/{name} {side(clean8)} 50 %", "inpaint", damaged, {"mask": holes},
                   lambda est, c=clean8: quality.psnr(quality.to_unit(c), quality.to_unit(est)), None)


def side(image: np.ndarray) -> str:
    """``512²`` or ``512×384``: the size actually fitted (a set's images can be smaller than
    the asked-for crop)."""
    height, width = image.shape[:2]
    return f"{height}²" if height == width else f"{height}×{width}"


def first_at_least(quality, data: Path, set_name: str, size: int) -> tuple[str, Path]:
    """The set's first image with both sides at least ``size`` (Set12 starts with 256²
    images, its 512² ones come later), else its first image."""
    return at_least(quality, data, set_name, size, 1)[0]


def at_least(quality, data: Path, set_name: str, size: int, count: int) -> list[tuple[str, Path]]:
    """The set's first ``count`` images with both sides at least ``size``; the first image
    alone where none is that large."""
    from PIL import Image

    images = quality.list_images(data, set_name, None)
    large = []
    for name, path in images:
        with Image.open(path) as image:
            if min(image.size) >= size:
                large.append((name, path))
    return large[:count] or images[:1]


def bm3d_baseline(quality, observed8, sigma, evaluate) -> dict | None:
    try:
        import bm3d
    except ImportError:
        return None
    noisy = observed8.astype(np.float64) / 255.0
    start = time.perf_counter()
    out = bm3d.bm3d_rgb(noisy, sigma / 255) if noisy.ndim == 3 else bm3d.bm3d(noisy, sigma / 255)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "psnr": evaluate(np.clip(out, 0, 1))}


# -- the baseline engine: a worktree of another commit ---------------------------------------


def baseline_worktree(rev: str, folder: Path) -> tuple[Path, str]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True,
                   capture_output=True, text=True)
    return folder / "src", commit


def remove_worktree(folder: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], capture_output=True)


# -- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    quality_default = ROOT / ".." / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(quality_default))
    parser.add_argument("--baseline", help="git revision of the engine to compare with (a worktree of it is used)")
    parser.add_argument("--current", help="git revision to measure as the current engine (default: this checkout's src)")
    parser.add_argument("--tasks", default="denoise", help="comma-separated: denoise, super-resolve, inpaint")
    parser.add_argument("--sizes", default="128", help="comma-separated image sides (of the result)")
    parser.add_argument("--sigmas", default="25", help="denoising noise levels, of 255")
    parser.add_argument("--colours", default="grey,RGB", help="denoising: grey (Set12), RGB (CSet9)")
    parser.add_argument("--configs", default="preset:fast,default",
                        help="comma-separated: preset:NAME (both engines) or default (no preset given), each with "
                             "optional +bf16, +fp16, +compile, +graphs / +nographs (CUDA graphs), "
                             "+recorrupt / +norecorrupt (denoising by recorruption or the paper's way), "
                             "+lrX (learning rate X), +b2X (Adam's beta2 X in recorrupted fits)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every fit (0: the engine's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1,
                        help="denoising: the first N images of each set with both sides at least the size (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factor", type=int, default=4, choices=(2, 3, 4, 8),
                        help="super-resolution factor (default 4)")
    parser.add_argument("--iterations", type=int, help="cap every fit's budget (for smoke tests; default: the preset's)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    return parser


def main(argv=None) -> int:
    options = build_parser().parse_args(argv)
    # Killed with SIGTERM: unwind like Ctrl-C, so the running fit is killed with us and the
    # worktrees are removed, instead of an orphan fit spoiling the next run's timings.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options.tasks = options.tasks.split(",")
    options.sizes = [int(s) for s in options.sizes.split(",")]
    options.sigmas = [float(s) for s in options.sigmas.split(",")]
    options.colours = options.colours.split(",")
    configs = options.configs.split(",")
    for config in configs:
        parse_config(config)  # refuse a typo before the first fit, not after an hour
    quality = _load_quality()

    engines = {"current": ROOT / "src"}
    work = Path(tempfile.mkdtemp(prefix="napari-dip-ttr-"))
    baseline_commit = None
    head, dirty = checkout_state()
    try:
        if options.current:
            # A committed engine, not the working tree: edits made while the run goes on
            # (or uncommitted ones) cannot leak into the measurement.
            engines["current"], head = baseline_worktree(options.current, work / "current")
            dirty = False
        if options.baseline:
            engines["baseline"], baseline_commit = baseline_worktree(options.baseline, work / "baseline")
        rows = []
        for name, task, observed, extra, evaluate, sigma in cases(quality, options):
            inputs = work / "inputs.npz"
            np.savez(inputs, observed=observed, **extra)
            row = {"case": name, "task": task, "fits": {}}
            for config in configs:
                preset, extra = parse_config(config)
                for engine, src in engines.items():
                    spec = {"task": task, "preset": preset, "factor": options.factor, "threads": options.threads,
                            "device": options.device, "seed": options.seed, "inputs": str(inputs),
                            "iterations": options.iterations, "extra": extra,
                            "result": str(work / "result.npy")}
                    try:
                        result = run_fit(src, spec)
                    except RuntimeError as error:
                        # One failed configuration (a compile that breaks on this card, say)
                        # costs its row, not the rest of a long run.
                        print(f"{name:38s} {engine:8s} {config:12s} FAILED: {str(error)[-400:]}", flush=True)
                        row["fits"][f"{engine} {config}"] = {"error": str(error)[-2000:]}
                        continue
                    result["psnr"] = evaluate(np.load(work / "result.npy"))
                    row["fits"][f"{engine} {config}"] = result
                    print(f"{name:38s} {engine:8s} {config:12s} {result['seconds']:7.1f} s  "
                          f"{result['psnr']:.2f} dB  best {result['best_iteration']} stop {result['iteration']} "
                          f"({result['stop_reason']}, preset {result['preset']}, {result['threads']} threads)",
                          flush=True)
            if task == "denoise":
                row["bm3d"] = bm3d_baseline(quality, observed, sigma, evaluate)
                if row["bm3d"]:
                    print(f"{name:38s} BM3D {row['bm3d']['seconds']:7.1f} s  {row['bm3d']['psnr']:.2f} dB", flush=True)
            rows.append(row)
            if options.out:  # after every case: a run cut short keeps what it measured
                write_rows(options, rows, head, dirty, baseline_commit, machine_name(options))
    finally:
        for name in ("baseline", "current"):
            if (work / name).exists():
                remove_worktree(work / name)
        shutil.rmtree(work, ignore_errors=True)  # the inputs and results of the fits

    machine = machine_name(options)
    print(f"\ntime to result, {date.today()}, {machine}; current = {head}{' + uncommitted src' if dirty else ''}"
          + (f", baseline = {baseline_commit}" if baseline_commit else ""))
    print(format_table(rows, configs, bool(baseline_commit)))
    if options.out:
        write_rows(options, rows, head, dirty, baseline_commit, machine)
    return 0


def checkout_state() -> tuple[str, bool]:
    """This checkout's commit and whether ``src`` has edits; on a machine without git or
    ``.git`` (a GPU machine gets a copy of the files) the commit comes from
    ``NAPARI_DIP_COMMIT``."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        head, dirty = "", False
    return head or os.environ.get("NAPARI_DIP_COMMIT", "unknown"), dirty


def cpu_kind(info: str | None = None) -> str:
    """The CPU's model and widest vector instructions, read from ``/proc/cpuinfo`` (or
    ``info``, its text): a fit can round differently on another machine (BENCHMARKS.md
    "Reproducing a fit on another machine"), so a table says which ran it. Empty where the
    system does not say."""
    if info is None:
        try:
            info = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return ", ".join(part for part in (model, vector) if part)


def machine_name(options) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    kind = cpu_kind()
    if kind:
        machine += f" ({kind})"
    if options.device != "cpu":
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
        machine += f", {gpu or options.device}"
    return machine


def write_rows(options, rows, head, dirty, baseline_commit, machine) -> None:
    options.out.write_text(json.dumps({"date": str(date.today()), "machine": machine, "current": head,
                                       "dirty": dirty, "baseline": baseline_commit,
                                       "command": " ".join(sys.argv), "rows": rows}, indent=1))


def format_table(rows: list[dict], configs: list[str], with_baseline: bool) -> str:
    lines = ["| case | settings | engine | seconds | PSNR (dB) | result from / stopped at | "
             "speed-up vs baseline | ΔPSNR vs baseline | time / BM3D |",
             "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        bm3d = row.get("bm3d")
        if bm3d:
            lines.append(f"| {row['case']} | | BM3D | {bm3d['seconds']:.1f} | {bm3d['psnr']:.2f} | | | | 1.0 |")
        for config in configs:
            current = row["fits"].get(f"current {config}")
            base = row["fits"].get(f"baseline {config}")
            for engine, fit in (("baseline", base), ("current", current)):
                if fit is None:
                    continue
                if "error" in fit:
                    lines.append(f"| {row['case']} | {config} | {engine} | failed | | | | | |")
                    continue
                speed = delta = ""
                if engine == "current" and base is not None and "error" not in base:
                    speed = f"{base['seconds'] / fit['seconds']:.2f}x"
                    delta = f"{fit['psnr'] - base['psnr']:+.2f}"
                ratio = f"{fit['seconds'] / bm3d['seconds']:.0f}x" if bm3d else ""
                lines.append(f"| {row['case']} | {config} ({fit['preset']}) | {engine} | {fit['seconds']:.1f} | "
                             f"{fit['psnr']:.2f} | {fit['best_iteration']} / {fit['iteration']} ({fit['stop_reason']}) | "
                             f"{speed} | {delta} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
