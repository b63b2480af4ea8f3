"""Study of the automatic stopping rules: where would each stop, and how far from the peak?

    python benchmarks/stopping.py --crop 96 --images 2 --iterations 1500   # CPU subset

For every image, two fits run to the full budget with ground truth at hand: one with the
ES-WMV rule and one with held-out validation (which changes the loss, so it needs its own
fit). Every iteration records the rule's score and the PSNR of the averaged output. The
rule's decision is then replayed offline for several patience values: it stops at the first
iteration ``patience`` past the best score (after the warm-up) and returns the average from
the best-score iteration. The table gives, per task and rule, the mean PSNR of that result,
the oracle (best PSNR in hindsight), the gap, and the iteration it stopped at.

Images, degradations and metrics come from ``benchmarks/quality.py`` so the protocols are
the same as the quality benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _load_script(name: str):
    """A sibling script of ``benchmarks/`` as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = _load_script("quality")
network_overrides = _load_script("network_fields").network_overrides


def cases(options):
    """Yield ``(task, name, observed, kwargs, evaluate)`` for the chosen subset."""
    data = Path(options.data)
    rng_seed = options.seed
    if "denoise" in options.tasks:
        for sigma in options.sigmas:
            for name, path in quality.list_images(data, "Set12", options.images + options.skip)[options.skip:]:
                clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), options.crop))
                noisy = quality.add_gaussian_noise(clean, sigma / 255, quality.image_seed(rng_seed, "Set12", name, sigma))
                label = f"Set12/{name}" if sigma == 25 else f"Set12-s{sigma:g}/{name}"
                yield "denoise", label, noisy, {}, lambda est, c=clean: quality.psnr(c, est)
    if "super-resolve" in options.tasks:
        for name, path in quality.list_images(data, "Set5", options.images + options.skip)[options.skip:]:
            factor = getattr(options, "factor", 4)
            crop = max(options.crop, quality.MIN_LR_SIDE * factor)
            hr8 = quality.crop_to_multiple(quality.centre_crop(quality.load_uint8(path), crop), factor)
            lr8 = quality.make_lr(hr8, factor)
            label = f"Set5/{name}" if factor == 4 else f"Set5-x{factor}/{name}"
            yield "super-resolve", label, lr8, {"factor": factor}, (
                lambda est, h=hr8 / 255.0: quality.metrics_y(h, quality.to_unit(est))["psnr"]
            )
    if "inpaint" in options.tasks:
        for name, path in quality.list_images(data, "Heide11", options.images + options.skip)[options.skip:]:
            clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), options.crop))
            holes = quality.random_mask(clean.shape[:2], 0.5, quality.image_seed(rng_seed, "Heide11", name))
            damaged = np.where(holes, 0.0, clean).astype(np.float32)
            yield "inpaint", f"Heide11/{name}", damaged, {"mask": holes}, lambda est, c=clean: quality.psnr(c, est)


def trace(task, observed, kwargs, evaluate, rule, options):
    """Run one fit to the end of the budget, recording (score, psnr) at every iteration."""
    from napari_dip.arrays import prepare_image, restore_layout
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    chw, layout, alpha = prepare_image(observed)
    model = forward_model_for(task, layout, **kwargs)
    net, fit = settings_for(task, options.preset, factor=kwargs.get("factor"), channels=options.channels,
                            stopping=rule, iterations=options.iterations, device=options.device, seed=options.seed,
                            learning_rate=options.learning_rate, adam_beta2=getattr(options, "adam_beta2", None),
                            reg_noise_std=getattr(options, "jitter", None))
    # Run the whole budget: the decision is replayed offline for several patience values.
    # No trend test either (the default's rise would end the fit at its first turn).
    fit = replace(fit, stopping=replace(fit.stopping, patience=10**9, warmup=0, rise=None))
    net = network_overrides(net, getattr(options, "network", None) or [])
    if getattr(options, "holdout", None) is not None:
        fit = replace(fit, stopping=replace(fit.stopping, holdout_fraction=options.holdout))
    with separable_convolutions(getattr(options, "separable", False)):
        fitter = Fitter(chw, model, net, fit)
    if getattr(options, "image_input", False) and task == "super-resolve":
        use_upsampled_input(fitter, chw)
    if getattr(options, "image_input", False) and task == "inpaint":
        use_filled_input(fitter, chw, ~np.asarray(kwargs["mask"], bool))
    if getattr(options, "lr_schedule", None):
        schedule_learning_rate(fitter.optimizer, options.lr_schedule)
    if getattr(options, "freeze_encoder", False):
        freeze_encoder(fitter.network)
    if getattr(options, "output_start", None):
        start_output_at(fitter, first_estimate(task, chw, kwargs, fitter.image_size, options.output_start))
    scores, psnrs = [], []
    start = time.perf_counter()
    for snap in fitter.run(snapshot_every=1):
        score = fitter.stopper.last_score
        scores.append(float("nan") if score is None else float(score))
        psnrs.append(evaluate(restore_layout(snap.average, layout, alpha)))
    return np.array(scores), np.array(psnrs), time.perf_counter() - start


def learning_rate_factor(schedule: str, step: int) -> float:
    """The factor on the learning rate at ``step`` (counted from 0) of a ``--lr-schedule``:
    ``cosine:N[:FLOOR]`` falls from 1 to FLOOR (default 0) along half a cosine over N steps;
    ``linear:N:START[:FLOOR]`` holds 1 until START * N, then falls in a line to FLOOR at N.

    >>> learning_rate_factor("cosine:100", 0), learning_rate_factor("cosine:100", 50)
    (1.0, 0.5)
    >>> learning_rate_factor("linear:100:0.5", 40), learning_rate_factor("linear:100:0.5", 75)
    (1.0, 0.5)
    """
    kind, *fields = schedule.split(":")
    length = int(fields[0])
    if kind == "cosine":
        floor = float(fields[1]) if len(fields) > 1 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step / length, 1.0)))
    if kind == "linear":
        start = float(fields[1]) * length
        floor = float(fields[2]) if len(fields) > 2 else 0.0
        return 1.0 if step <= start else 1 - (1 - floor) * min((step - start) / (length - start), 1.0)
    raise ValueError(f"--lr-schedule must be cosine:N[:FLOOR] or linear:N:START[:FLOOR], got {schedule!r}")


def schedule_learning_rate(optimizer, schedule: str) -> None:
    """Set the learning rate before every Adam step of a fit by ``schedule``
    (:func:`learning_rate_factor`), overriding the halving a backtrack makes. Measured
    here, not in the engine: the engine keeps a constant rate (BENCHMARKS.md,
    *Super-resolution and inpainting: other schedules*)."""
    base = [group["lr"] for group in optimizer.param_groups]
    step = optimizer.step
    count = 0

    def scheduled_step(*args, **kwargs):
        nonlocal count
        factor = learning_rate_factor(schedule, count)
        count += 1
        for group, rate in zip(optimizer.param_groups, base):
            group["lr"] = rate * factor
        return step(*args, **kwargs)

    optimizer.step = scheduled_step


def use_upsampled_input(fitter, chw: np.ndarray) -> None:
    """Super-resolution with the low-resolution image, upsampled bicubically, in the first C
    of the network's input channels in place of noise (the rest stay noise; the jitter
    still applies). Measured here, not in the engine (BENCHMARKS.md, *Super-resolution and
    inpainting: other schedules*)."""
    import torch
    import torch.nn.functional as F

    image = torch.as_tensor(chw)[None]
    _image_in_input(fitter, F.interpolate(image, size=fitter.image_size, mode="bicubic", align_corners=False).clamp(0, 1))


def _image_in_input(fitter, image) -> None:
    """``image`` (1, C, H, W) in place of the first C channels of ``fitter``'s noise input."""
    from napari_dip.engine.fit import _padded

    fitter.input = fitter.input.clone()
    fitter.input[:, : image.shape[1]] = _padded(image, fitter._crop, fitter.padded_size).to(fitter.input.device)


@contextlib.contextmanager
def separable_convolutions(wanted: bool):
    """While building a network, every convolution wider than 1x1 becomes a depthwise one
    (same kernel, stride and padding, one filter per input channel) followed by a 1x1
    one: about a sixth of the weights. Measured here, not in the engine (BENCHMARKS.md,
    *A frozen encoder, separable convolutions*)."""
    from torch import nn

    from napari_dip.engine import networks

    plain = networks._conv

    def separable(cfg, cin, cout, kernel, stride=1, replicas=1):
        if kernel == 1 or replicas != 1:
            return plain(cfg, cin, cout, kernel, stride, replicas)
        return nn.Sequential(
            nn.Conv2d(cin, cin, kernel, stride=stride, padding=kernel // 2, groups=cin, bias=False,
                      padding_mode="zeros" if cfg.padding == "zeros" else cfg.padding),
            nn.Conv2d(cin, cout, 1),
        )

    if wanted:
        networks._conv = separable
    try:
        yield
    finally:
        networks._conv = plain


def freeze_encoder(network) -> int:
    """Keep the skip network's encoder at its random start: the down and skip branches of
    every scale get no gradient, so the backward pass skips them and only the decoder (the
    merging convolutions and the head) is fitted. Returns the number of weights frozen.
    Measured here, not in the engine (BENCHMARKS.md, *A frozen encoder, separable
    convolutions*)."""
    frozen = 0
    scale = network.body
    while scale is not None:
        for branch in (scale.down, scale.skip):
            for weight in branch.parameters() if branch is not None else ():
                weight.requires_grad_(False)
                frozen += weight.numel()
        scale = scale.coarser
    return frozen


def first_estimate(task: str, chw: np.ndarray, kwargs: dict, size: tuple[int, int], method: str) -> np.ndarray:
    """A quick classical estimate of the restored image, ``(C, H, W)``: the low-resolution
    image upscaled by PIL (``bicubic`` or ``lanczos``) for super-resolution, the damaged
    image inpainted by scikit-image's biharmonic fill (``biharmonic``) for inpainting."""
    if task == "super-resolve" and method in ("bicubic", "lanczos"):
        up = [quality.pil_resize(np.round(c * 255).astype(np.uint8), size[::-1], method) for c in chw]
        return np.stack(up).astype(np.float32) / 255.0
    if task == "inpaint" and method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        holes = np.asarray(kwargs["mask"], bool)
        return np.stack([inpaint_biharmonic(c, holes) for c in chw]).astype(np.float32)
    raise SystemExit(f"--output-start {method} does not apply to {task}")


def start_output_at(fitter, estimate: np.ndarray) -> None:
    """Fit a correction to ``estimate`` instead of the whole image: the fitted output becomes
    ``estimate + sigmoid(head) - 1/2``, and the network's last (1x1) convolution starts at
    zero, so the fit starts exactly at ``estimate`` whatever the input's jitter. Measured
    here, not in the engine (BENCHMARKS.md, *A classical first estimate as the fit's start*)."""
    import torch

    from napari_dip.engine.fit import _padded

    # The start is exact only for one run through a sigmoid (sigmoid(0) = 1/2).
    if not fitter.network_config.output_sigmoid or fitter.runs != 1:
        raise SystemExit("--output-start needs the network's output sigmoid and a single run")
    with torch.no_grad():
        fitter.network.head.weight.zero_()
        fitter.network.head.bias.zero_()
    base = _padded(torch.as_tensor(estimate)[None], fitter._crop, fitter.padded_size).to(fitter.device)
    offset = base - 0.5
    network = fitter._forward
    fitter._forward = lambda z: network(z) + offset


def use_filled_input(fitter, chw: np.ndarray, known: np.ndarray, sigma: float = 2.0) -> None:
    """Inpainting with the damaged image, its holes filled by a Gaussian blur of ``sigma``
    pixels over the known pixels (:func:`napari_dip.drift.observed_blur`), in the first C of
    the network's input channels in place of noise; the rest stay noise. Measured here, not
    in the engine (BENCHMARKS.md, *The filled image as inpainting's input*)."""
    import torch

    from napari_dip.drift import observed_blur

    filled = np.empty(chw.shape, np.float32)
    for c, channel in enumerate(chw):
        spread = observed_blur(channel, known, sigma)
        filled[c] = np.where(known, channel, np.where(np.isnan(spread), channel[known].mean(), spread))
    _image_in_input(fitter, torch.as_tensor(filled)[None])


def replay(scores, psnrs, patience, warmup):
    """Where the rule stops and the PSNR of what it returns."""
    best_score, best_at = np.inf, None
    for i, score in enumerate(scores, start=1):
        if i >= warmup and score < best_score:
            best_score, best_at = score, i
        if best_at is not None and i - best_at >= patience:
            return i, best_at, psnrs[best_at - 1]
    end = len(scores)
    return (end, best_at, psnrs[best_at - 1]) if best_at else (end, None, psnrs[-1])


def replay_rise(scores, psnrs, tolerance, min_wait, patience, warmup):
    """Replay the trend rule: stop once the score has risen ``tolerance`` (relative) above
    its best and stayed past it for ``min_wait`` iterations, or after ``patience``."""
    best_score, best_at = np.inf, None
    for i, score in enumerate(scores, start=1):
        if i >= warmup and score < best_score:
            best_score, best_at = score, i
        if best_at is not None:
            waited = i - best_at
            if waited >= patience or (waited >= min_wait and score > best_score * (1 + tolerance)):
                return i, best_at, psnrs[best_at - 1]
    end = len(scores)
    return (end, best_at, psnrs[best_at - 1]) if best_at else (end, None, psnrs[-1])


def replay_slope(scores, psnrs, window, min_wait, patience, warmup):
    """Replay the slope rule: stop once the least-squares slope of the score over the last
    ``window`` iterations is positive, at least ``min_wait`` past the best, or after ``patience``."""
    best_score, best_at = np.inf, None
    x = np.arange(window) - (window - 1) / 2
    for i, score in enumerate(scores, start=1):
        if i >= warmup and score < best_score:
            best_score, best_at = score, i
        if best_at is not None:
            waited = i - best_at
            rising = waited >= min_wait and i >= window and float(x @ scores[i - window:i]) > 0
            if waited >= patience or rising:
                return i, best_at, psnrs[best_at - 1]
    end = len(scores)
    return (end, best_at, psnrs[best_at - 1]) if best_at else (end, None, psnrs[-1])


def resmooth(scores: np.ndarray, weight: float, recorded: float | None = None) -> np.ndarray:
    """The held-out errors as if smoothed with ``weight`` instead of ``recorded`` (default:
    the engine's ``StoppingConfig.smoothing``, with which the traces were saved): undo the
    exponential smoothing, then apply the new one."""
    if recorded is None:
        from napari_dip.engine.stopping import StoppingConfig

        recorded = StoppingConfig().smoothing
    raw = scores.astype(np.float64).copy()
    raw[1:] = (scores[1:] - recorded * scores[:-1]) / (1.0 - recorded)
    out = np.empty_like(raw)
    out[0] = raw[0]
    for i in range(1, len(raw)):
        out[i] = weight * out[i - 1] + (1.0 - weight) * raw[i]
    return out


def from_traces(folder: Path, rules: list[str], warmup: int) -> int:
    """Replay candidate rules on saved traces (``--traces``) without fitting again.

    Each rule is ``pP`` (patience P), ``rT/W/P`` (rise of T relative after W iterations,
    patience P as the backstop) or ``sN/W/P`` (slope over the last N iterations positive,
    at least W past the best, patience P); ``...@S`` replays it on the held-out errors
    smoothed with weight S instead of the engine's 0.9 (validation traces only).
    """
    traces = sorted(folder.glob("*.npz"))
    if not traces:
        print(f"no traces in {folder}")
        return 1
    totals = {rule: [] for rule in rules}
    print(f"{'trace':48s} oracle    " + "  ".join(f"{r:>16s}" for r in rules))
    for path in traces:
        data = np.load(path)
        psnrs = data["psnrs"]
        oracle = float(np.max(psnrs))
        cells = []
        for name in rules:
            rule, _, smoothing = name.partition("@")
            if smoothing and not path.stem.split("-holdout")[0].endswith("-validation"):
                raise SystemExit(f"{name}: re-smoothing applies to held-out validation traces only, not {path.name}")
            scores = resmooth(data["scores"], float(smoothing)) if smoothing else data["scores"]
            if rule.startswith("p"):
                stop, _best, value = replay(scores, psnrs, int(rule[1:]), warmup)
            elif rule.startswith("s"):
                window, min_wait, patience = (int(v) for v in rule[1:].split("/"))
                stop, _best, value = replay_slope(scores, psnrs, window, min_wait, patience, warmup)
            else:
                tolerance, min_wait, patience = rule[1:].split("/")
                stop, _best, value = replay_rise(scores, psnrs, float(tolerance), int(min_wait), int(patience), warmup)
            totals[name].append((value - oracle, stop, len(scores)))
            cells.append(f"{value - oracle:+.2f}@{stop:<5d}")
        print(f"{path.stem:48s} {oracle:6.2f}   " + "  ".join(f"{c:>16s}" for c in cells))
    print("\nmean gap to the oracle (dB), mean stop iteration, worst gap")
    for rule, rows in totals.items():
        gaps = np.array([r[0] for r in rows])
        stops = np.array([r[1] for r in rows])
        print(f"  {rule:14s} {gaps.mean():+.3f} dB  @{stops.mean():6.0f}  worst {gaps.min():+.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(quality.DEFAULT_DATA))
    parser.add_argument("--tasks", default="denoise,super-resolve,inpaint")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N images of each set")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--channels", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--patience", default="100,200,300,500,1000")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rules", default="wmv,validation")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor (default 4)")
    parser.add_argument("--adam-beta2", type=float, help="Adam's beta2 (default: the preset's for the task)")
    parser.add_argument("--jitter", type=float,
                        help="the input's jitter, reg_noise_std (default: the preset's for the task)")
    parser.add_argument("--lr-schedule", help="cosine:N[:FLOOR] or linear:N:START[:FLOOR]: the learning rate's "
                        "factor over the steps (default: constant, as the engine fits)")
    parser.add_argument("--image-input", action="store_true",
                        help="the upsampled image (super-resolution) or the image with its holes filled "
                             "(inpainting) in the input's first channels instead of noise")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="fit only the decoder: the down and skip branches keep their random weights")
    parser.add_argument("--output-start", choices=("bicubic", "lanczos", "biharmonic"),
                        help="fit a correction to this classical estimate (start_output_at)")
    parser.add_argument("--separable", action="store_true",
                        help="depthwise-separable convolutions in place of every convolution wider than 1x1")
    parser.add_argument("--network", action="append", metavar="FIELD=VALUE",
                        help="change a field of the preset's network, e.g. channels_up=16:48:48:48:48 (repeatable)")
    parser.add_argument("--holdout", type=float, help="held-out validation: fraction of pixels left out (default: 5 %%)")
    parser.add_argument("--sigmas", default="25", help="denoising noise levels (of 255), comma-separated")
    parser.add_argument("--traces", type=Path,
                        help="also save each fit's per-iteration score and PSNR here (npz), to replay other rules")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--from-traces", type=Path, help="replay --replay-rules on traces saved with --traces; no fit")
    parser.add_argument("--replay-rules", default="p100,p200,p300,r0.01/50/300,r0.02/50/300",
                        help="with --from-traces: pP (patience), rT/W/P (relative rise T after W, patience P), "
                             "sN/W/P (slope over N positive, W past the best, patience P)")
    options = parser.parse_args(argv)
    if options.from_traces:
        return from_traces(options.from_traces, options.replay_rules.split(","), options.warmup)
    options.sigmas = [float(s) for s in options.sigmas.split(",")]
    options.tasks = options.tasks.split(",")
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    patiences = [int(p) for p in options.patience.split(",")]

    rows = []
    for task, name, observed, kwargs, evaluate in cases(options):
        for rule in options.rules.split(","):
            try:
                scores, psnrs, seconds = trace(task, observed, kwargs, evaluate, rule, options)
            except FloatingPointError as error:  # a diverged fit is a result too: report it, go on
                print(f"{task:13s} {name:22s} {rule:10s} failed: {error}", flush=True)
                continue
            if options.traces:
                options.traces.mkdir(parents=True, exist_ok=True)
                # Traces of another held-out fraction say so in their name and their data,
                # so that a folder reused for both cannot mix them up unnoticed.
                holdout = getattr(options, "holdout", None)
                suffix = "" if holdout is None else f"-holdout{holdout:g}"
                np.savez(options.traces / f"{task}-{name.replace('/', '-')}-{rule}{suffix}.npz",
                         scores=scores, psnrs=psnrs, seconds=seconds,
                         holdout=np.nan if holdout is None else holdout)
            row = {"task": task, "image": name, "rule": rule, "seconds": seconds,
                   "oracle": float(psnrs.max()), "oracle_at": int(psnrs.argmax()) + 1, "final": float(psnrs[-1]),
                   "replays": {}}
            for patience in patiences:
                stop, best, value = replay(scores, psnrs, patience, options.warmup)
                row["replays"][patience] = {"stop": stop, "best": best, "psnr": float(value)}
            rows.append(row)
            print(f"{task:13s} {name:22s} {rule:10s} oracle {row['oracle']:.2f}@{row['oracle_at']} "
                  f"final {row['final']:.2f} " + " ".join(
                      f"P{p}:{r['psnr']:.2f}@{r['stop']}" for p, r in row["replays"].items()), flush=True)

    print("\nmean over images: PSNR of the stopped result (gap to oracle) and stop iteration")
    for task in options.tasks:
        for rule in options.rules.split(","):
            sel = [r for r in rows if r["task"] == task and r["rule"] == rule]
            if not sel:
                continue
            oracle = np.mean([r["oracle"] for r in sel])
            final = np.mean([r["final"] for r in sel])
            cells = []
            for p in patiences:
                value = np.mean([r["replays"][p]["psnr"] for r in sel])
                stop = np.mean([r["replays"][p]["stop"] for r in sel])
                cells.append(f"P{p}: {value:.2f} ({value - oracle:+.2f}) @{stop:.0f}")
            print(f"{task:13s} {rule:10s} n={len(sel)} oracle {oracle:.2f} budget-end {final:.2f} | " + " | ".join(cells))
    if options.out:
        options.out.write_text(json.dumps({"options": {k: v for k, v in vars(options).items() if k != "out"},
                                           "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
