"""Real fluorescence noise (FMD): noise models against each other and against BM3D, in one run.

    python benchmarks/fmd.py --crop 256 --images 0-3 --out benchmarks/results/fmd-cpu-0.json
    python benchmarks/fmd.py --merge benchmarks/results/fmd-cpu-*.json --out benchmarks/results/fmd-cpu.json

For each FMD ``*_1`` image (Zhang et al. 2019: one raw acquisition, ``raw/``, and the mean
of 50, ``gt/``; 8-bit), a centre crop of ``--crop`` pixels is restored by

* ``noisy``: the raw crop itself;
* ``bm3d``: BM3D (``bm3d`` package) with the Gaussian sigma estimated from the crop
  (:func:`napari_dip.restore.estimate_noise`);
* ``gat_bm3d``: BM3D with sigma 1 after the generalised Anscombe transform with ``a`` and
  ``b`` estimated from the crop (:func:`napari_dip.noise.estimate_noise_levels`), mapped
  back with the exact unbiased inverse;
* ``dip_gaussian``, ``dip_pg_gat``, ``dip_pg_weighted``: :func:`napari_dip.iter_restore`
  with ``noise="gaussian"``, and ``noise="poisson-gaussian"`` fitted in the transformed
  space or with the variance-weighted loss, each automatically stopped (``_auto``: the
  returned result) and the best PSNR of the running average over its snapshots (every
  25 iterations, up to the stop: ``_oracle``);
* ``dip_pg_gat_recorrupt``, ``dip_pg_gat_paper``: ``dip_pg_gat`` with ``recorrupt=True``
  (the noisy image recorrupted as the input: the preset's default) and ``recorrupt=False``
  (the paper's fixed noise input);
* ``dip_default``: what ``noise="auto"`` does: the same fit as the variant it picks
  (same seed and settings, so the same numbers; the pick is recorded).

PSNR against ``gt`` with data range 255. Seconds are wall time per fit, one at a time in
this process. Nothing is written to the data folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT / ".." / "shared" / "data"
DIP_VARIANTS = {
    "dip_gaussian": {"noise": "gaussian"},
    "dip_pg_gat": {"noise": "poisson-gaussian", "noise_fit": "gat"},
    "dip_pg_weighted": {"noise": "poisson-gaussian", "noise_fit": "weighted"},
    # Recorruption through the transform: the default since the seventh session of issue 9
    # (before it, dip_pg_gat fitted the paper's way); the two variants below pin each way.
    "dip_pg_gat_recorrupt": {"noise": "poisson-gaussian", "noise_fit": "gat", "recorrupt": True},
    "dip_pg_gat_paper": {"noise": "poisson-gaussian", "noise_fit": "gat", "recorrupt": False},
}
ACQUISITIONS = ("Confocal", "TwoPhoton", "WideField")


def load_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    if not size:
        return image
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    error = np.mean((clean.astype(np.float64) - np.asarray(estimate, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def parse_range(text: str, count: int) -> list[int]:
    if not text:
        return list(range(count))
    picks = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        picks.extend(range(int(first), int(last or first) + 1))
    return [i for i in picks if i < count]


def bm3d_methods(raw: np.ndarray, gt: np.ndarray) -> dict:
    import bm3d

    from napari_dip.noise import estimate_noise_levels, gat, gat_inverse
    from napari_dip.restore import estimate_noise

    rows = {}
    start = time.perf_counter()
    sigma = estimate_noise((raw / 255.0)[None])
    result = bm3d.bm3d(raw / 255.0, sigma_psd=sigma) * 255
    rows["bm3d"] = {"psnr": psnr(gt, result), "seconds": time.perf_counter() - start, "sigma": sigma * 255}
    start = time.perf_counter()
    levels = estimate_noise_levels(raw.astype(np.float64))
    a = max(levels.a, 1e-3)
    transformed = gat(raw, a, levels.b)
    result = gat_inverse(bm3d.bm3d(transformed, sigma_psd=1.0), a, levels.b)
    rows["gat_bm3d"] = {"psnr": psnr(gt, result), "seconds": time.perf_counter() - start, "a": levels.a,
                        "b": levels.b}
    return rows


def dip_methods(raw: np.ndarray, gt: np.ndarray, options, picked: str | None = None) -> dict:
    """The DIP variants asked for; ``dip_default`` in ``--variants`` means the one
    ``noise="auto"`` picks (``picked``), so a short run can fit only what a user gets."""
    from napari_dip.errors import InputError
    from napari_dip.restore import iter_restore

    wanted = set(options.variants or DIP_VARIANTS)
    if "dip_default" in wanted and picked:
        wanted.add(picked)
    rows = {}
    for name, noise in DIP_VARIANTS.items():
        if name not in wanted:
            continue
        start = time.perf_counter()
        trajectory = []
        final = None
        try:
            stream = iter_restore("denoise", raw, preset=options.preset, device=options.device, seed=options.seed,
                                  snapshot_every=25, iterations=options.iterations, channels=options.channels,
                                  cuda_graphs=options.cuda_graphs, **noise)
        except InputError as error:
            # The API refuses a Poisson-Gaussian fit where it estimates no signal-dependent
            # noise (a = 0): the user gets the Gaussian fit instead, so the table does too.
            print(f"  {name:16s} refused ({error}); counted as dip_gaussian", flush=True)
            for kind in ("_auto", "_oracle"):
                # Without the Gaussian fit in this run, --merge fills it in from another.
                rows[name + kind] = {**rows.get("dip_gaussian" + kind, {"psnr": None}), "refused": str(error)}
            continue
        for snap in stream:
            if snap.done:
                final = snap
            else:
                trajectory.append((snap.iteration, psnr(gt, snap.average)))
        seconds = time.perf_counter() - start
        auto = psnr(gt, final.average)
        best_iteration, best = max(trajectory + [(final.iteration, auto)], key=lambda item: item[1])
        rows[name + "_auto"] = {"psnr": auto, "seconds": seconds, "iteration": final.iteration,
                                "best_iteration": final.best_iteration, "stop_reason": final.stop_reason,
                                "noise": final.settings.get("noise"), "held_out": final.settings.get("held_out")}
        rows[name + "_oracle"] = {"psnr": best, "iteration": best_iteration}
        print(f"  {name:16s} auto {auto:.2f} (it {final.best_iteration}/{final.iteration}) oracle {best:.2f} "
              f"(it {best_iteration}) {seconds:.0f}s", flush=True)
    return rows


def auto_choice(raw: np.ndarray) -> dict:
    from napari_dip.arrays import prepare_image
    from napari_dip.noise_model import plan_noise

    chw, layout, _ = prepare_image(raw)
    return plan_noise(chw, layout.low, layout.high, noise="auto").describe()


def run(options) -> dict:
    folder = Path(options.data) / "microscopy" / "FMD"
    names = sorted(p.name for p in (folder / "raw").glob("*_1.png"))
    if not names:
        raise SystemExit(f"no FMD images in {folder / 'raw'}; pass --data")
    results = {}
    for index in parse_range(options.images, len(names)):
        name = names[index]
        raw = centre_crop(load_grey(folder / "raw" / name), options.crop)
        gt = centre_crop(load_grey(folder / "gt" / name), options.crop)
        print(f"{index:2d} {name}", flush=True)
        rows = {"noisy": {"psnr": psnr(gt, raw)}}
        if not options.no_bm3d:
            rows.update(bm3d_methods(raw, gt))
        choice = auto_choice(raw)
        picked = "dip_gaussian" if choice["model"] == "gaussian" else f"dip_pg_{choice.get('fit', 'gat')}"
        if not options.no_dip:
            rows.update(dip_methods(raw, gt, options, picked))
        if picked + "_auto" in rows:
            rows["dip_default_auto"] = {**rows[picked + "_auto"], "same_as": picked}
            rows["dip_default_oracle"] = {**rows[picked + "_oracle"], "same_as": picked}
        results[name] = {"index": index, "auto_choice": choice, "methods": rows}
        print("  " + " ".join(f"{k} {v['psnr']:.2f}" for k, v in rows.items() if v["psnr"] is not None), flush=True)
        if options.out:  # after every image: a crash later loses nothing measured
            options.out.write_text(json.dumps({"partial": True, "results": results}, indent=1))
    return results


def set12_check(options) -> dict:
    """What ``noise="auto"`` picks on Set12 with Gaussian noise (sigma 25, 8-bit clipped)."""
    from napari_dip.arrays import prepare_image
    from napari_dip.noise_model import plan_noise

    rng = np.random.default_rng(options.seed)
    picks = {}
    paths = sorted((Path(options.data) / "denoise" / "Set12").glob("*.png"))
    if not paths:
        raise SystemExit(f"no Set12 images under {options.data}; pass --data")
    for path in paths:
        clean = centre_crop(load_grey(path), options.crop).astype(np.float64)
        noisy = np.clip(np.round(clean + rng.normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
        chw, layout, _ = prepare_image(noisy)
        picks[path.name] = plan_noise(chw, layout.low, layout.high, noise="auto").describe()["model"]
    return picks


def summary(results: dict) -> dict:
    groups = {kind: [r for n, r in results.items() if n.startswith(kind)] for kind in ACQUISITIONS}
    groups["all"] = list(results.values())
    table = {}
    for group, rows in groups.items():
        if not rows:
            continue
        # A method run on some images only (a chunk that ran out of time) is averaged over
        # those, and says how many.
        methods = list(dict.fromkeys(m for r in rows for m in r["methods"]))
        table[group] = {}
        for m in methods:
            having = [r["methods"][m] for r in rows if m in r["methods"] and r["methods"][m]["psnr"] is not None]
            if having:
                table[group][m] = {"psnr": float(np.mean([h["psnr"] for h in having])),
                                   "seconds": float(np.mean([h.get("seconds", np.nan) for h in having])),
                                   "images": len(having)}
    return table


def markdown(table: dict) -> str:
    methods = list(table["all"].keys())
    lines = ["| method | " + " | ".join(f"{g} ({table[g][methods[0]]['images']})" for g in table) + " | s / image |",
             "|---|" + "---:|" * (len(table) + 1)]
    for m in methods:
        seconds = table["all"][m]["seconds"]
        cell = lambda g: (f"{table[g][m]['psnr']:.2f}" + ("" if table[g][m]["images"] == table[g][methods[0]]["images"]
                                                          else f" ({table[g][m]['images']})")) if m in table[g] else ""
        lines.append(f"| {m} | " + " | ".join(cell(g) for g in table)
                     + f" | {'' if np.isnan(seconds) else f'{seconds:.0f}'} |")
    return "\n".join(lines)


def machine_name(device: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            machine += f", {torch.cuda.get_device_name(0)}"
    return machine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole images)")
    parser.add_argument("--images", default="", help="indices of the sorted *_1 images, e.g. 0-3 or 0,5 (default: all)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, help="budget (default: the preset's)")
    parser.add_argument("--channels", type=int, help="network width (default: the preset's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    graphs = parser.add_mutually_exclusive_group()
    graphs.add_argument("--cuda-graphs", action="store_const", const=True, dest="cuda_graphs",
                        help="replay each step as a CUDA graph (the CUDA default since 770410c)")
    graphs.add_argument("--no-cuda-graphs", action="store_const", const=False, dest="cuda_graphs",
                        help="launch each step's kernels one by one on CUDA")
    parser.add_argument("--no-bm3d", action="store_true")
    parser.add_argument("--no-dip", action="store_true",
                        help="only the noisy image and the BM3D methods (e.g. on the CPU, for DIP fits run on a GPU "
                             "machine without bm3d; --merge puts them together)")
    parser.add_argument("--variants", nargs="+", choices=[*DIP_VARIANTS, "dip_default"],
                        help="DIP fits to run (default: all), e.g. to run the slow ones in a later chunk")
    parser.add_argument("--set12", action="store_true", help="only check what noise='auto' picks on Set12, sigma 25")
    parser.add_argument("--merge", nargs="+", type=Path, help="merge the results of earlier runs")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    stamp = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "command": " ".join(sys.argv),
             "machine": machine_name(options.device), "options": {k: str(v) for k, v in vars(options).items()}}
    if options.set12:
        picks = set12_check(options)
        print(json.dumps(picks, indent=1))
        output = {**stamp, "set12_sigma25_auto_choice": picks}
    elif options.merge:
        results, runs = {}, []
        for path in options.merge:
            data = json.loads(path.read_text())
            for name, result in data["results"].items():
                # Runs of different --variants on the same image add up.
                if name in results:
                    results[name]["methods"].update(result["methods"])
                else:
                    results[name] = result
        for result in results.values():
            methods = result["methods"]
            for key, row in methods.items():
                if row.get("refused") and row.get("psnr") is None:
                    # Every Poisson-Gaussian variant falls back on the Gaussian fit of its kind.
                    kind = "_auto" if key.endswith("_auto") else "_oracle"
                    methods[key] = {**methods.get("dip_gaussian" + kind, {"psnr": None}), "refused": row["refused"]}
            # A run cut short wrote its results without the stamp.
            runs.append({k: data.get(k) for k in ("date", "command", "machine")})
        output = {**stamp, "runs": runs, "results": results, "summary": summary(results)}
        print(markdown(output["summary"]))
    else:
        results = run(options)
        output = {**stamp, "results": results, "summary": summary(results)}
        print(markdown(output["summary"]))
    if options.out:
        options.out.write_text(json.dumps(output, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
