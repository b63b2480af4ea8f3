"""Command line: ``napari-dip denoise|super-resolve|inpaint INPUT -o OUTPUT`` and ``napari-dip demo``.

Errors a user can fix (missing file, wrong mask shape, too small an image, unsupported
dtype, output exists or cannot be written, no display for ``gui``) end the program with
status 2 and one line on standard error; they are found before the fit, and nothing is
written then. If the output still cannot be written after the fit, the result goes to a
rescue file in the temporary folder, which the error line names. Warnings about the input
(an inpainting mask that looks inverted) are one ``napari-dip: warning:`` line each.

The axes of INPUT come from the file (ImageJ hyperstack or OME-TIFF metadata, tifffile's
series axes) or from ``--axes``; a file that does not say (a plain ``(5, 64, 64)`` TIFF)
is refused with a hint, never guessed. Stacks (``T``, ``Z``) are restored plane by plane,
each plane warm-started from the previous one unless ``--no-warm-start``, and the result
is written back as the same kind of file with the same axes and calibration
(:mod:`napari_dip.io`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import DeviceMemoryError, InputError, InputWarning

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: A progress bar update at least this often (seconds), however slow an iteration is.
PROGRESS_SECONDS = 2.0


def _add_fit_options(parser: argparse.ArgumentParser, single_file: bool = True) -> None:
    if single_file:  # ``batch`` names its inputs and output folder its own way
        parser.add_argument("input", type=Path, help="image to restore (.tif, .tiff or .png, or an .ome.zarr folder)")
        parser.add_argument("-o", "--output", type=Path, required=True,
                            help="where to write the result (.tif or .png)")
        parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--preset", choices=("auto", "paper", "fast"), default="auto",
                        help="paper: the published network and schedule; fast: 48-channel network (32 for denoising) and, for "
                             "super-resolution and inpainting, a shorter budget, practical on a CPU; "
                             "auto: paper's network on a CUDA GPU, fast otherwise, denoising by recorruption with "
                             "either (default: auto)")
    parser.add_argument("--iterations", type=_COUNT, help="number of iterations (default: the preset's)")
    parser.add_argument("--learning-rate", type=_POSITIVE, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--reg-noise-std", type=_number(float, 0), help="jitter of the input noise (default: the preset's; for denoising, a third of the estimated noise level, within 1/30 to 1/15)")
    parser.add_argument("--channels", type=_COUNT, help="channels per scale of the network (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"),
                        help="mixed precision for the network (default: float32)")
    parser.add_argument("--stop", choices=("wmv", "validation", "none"),
                        help="automatic stopping rule; none runs the whole budget (default: the task's rule)")
    parser.add_argument("--patience", type=_COUNT,
                        help="iterations without improvement before stopping (default: the rule's)")
    parser.add_argument("--runs", type=_COUNT, help="average this many independent fits, run side by side (default: 1)")
    parser.add_argument("--noise", choices=("auto", "gaussian", "poisson-gaussian"), default="auto",
                        help="denoising: the noise model; poisson-gaussian is photon-limited noise (fluorescence), "
                             "variance a*signal + b; auto estimates a and b from the image and picks it when the "
                             "variance grows with the signal (default: auto)")
    parser.add_argument("--noise-fit", choices=("gat", "weighted"),
                        help="how a poisson-gaussian model is fitted: in Anscombe-transformed space (gat) or with a "
                             "variance-weighted loss on the raw values (weighted) (default: the API's)")
    parser.add_argument("--offset", type=float,
                        help="denoising: the camera's baseline (value of no light) in the file's units "
                             "(default: estimated)")
    parser.add_argument("--gain", type=float,
                        help="denoising: the camera's gain, file units per photo-electron (default: estimated)")
    parser.add_argument("--recorrupt", action=argparse.BooleanOptionalAction, default=None,
                        help="denoising: the noisy image as the network's input, with fresh noise of the estimated "
                             "level split between input and target at every step, instead of the paper's fixed "
                             "noise input (default: on with the auto and fast presets for noise that is not correlated "
                             "between neighbours, photon-limited noise through the Anscombe transform; off with "
                             "--preset paper or --reg-noise-std; with --noise-fit weighted off, and refused if asked "
                             "for)")
    parser.add_argument("--threads", type=_threads,
                        help="CPU threads, or 'auto': as many as there are idle cores when the fit starts, which "
                             "spares a busy machine but makes the result depend on the load (default: PyTorch's)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="run the network through torch.compile, cached for later runs: the first run compiles "
                             "for minutes, later ones start in seconds; about 1.1x per step on a CPU (default: off)")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None,
                        help="on a CUDA GPU, launch every step's kernels one by one instead of replaying the step "
                             "as a CUDA graph (default: graphs on CUDA, 3x faster per step at 256² on an H200)")
    parser.add_argument("--axes", metavar="LETTERS",
                        help="what each axis of INPUT is, one letter per axis from T (time), Z (depth), "
                             "C (channels) and Y, X (the image plane), e.g. ZYX, TYX, CYX, YXC, TZCYX; "
                             "T and Z are restored plane by plane, C together (default: from the file: "
                             "ImageJ or OME-TIFF metadata)")
    parser.add_argument("--channel-axis", type=int, choices=(0, -1),
                        help="of a 3D image: 0 is --axes CYX, -1 is --axes YXC")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="fit every plane of a stack on its own; by default a plane starts from the "
                             "previous plane's network, with a much smaller budget, unless its picture drifted more "
                             "than 3 px from its chain's first plane (super-resolution, inpainting: see README)")
    parser.add_argument("--3d", dest="volumetric", action="store_true",
                        help="fit each Z-stack at once with a 3D network (denoise, inpaint; the file needs a Z "
                             "axis); the voxel spacing comes from the file's calibration")
    parser.add_argument("--tile-size", type=int, metavar="PX",
                        help="restore in overlapping tiles of at most PX pixels a side, blended without seams "
                             "(default: tiles only when the image does not fit the device's free memory)")
    parser.add_argument("--tile-overlap", type=_number(int, 0), metavar="PX",
                        help="least overlap of neighbouring tiles in pixels (default: an eighth of the tile)")
    parser.add_argument("--progress-every", type=_COUNT, default=10, metavar="N",
                        help="update the progress bar every N iterations (default: 10)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_trust_options(parser: argparse.ArgumentParser, residual: bool = False) -> None:
    parser.add_argument("--uncertainty", type=Path, metavar="TIFF",
                        help="also write the per-pixel standard deviation of the --runs (2 or more) results, "
                             "float32 in the image's units: large where the result is not determined by the data")
    if residual:
        parser.add_argument("--residual", type=Path, metavar="TIFF",
                            help="also write INPUT minus the result, float32, divided by the noise model's "
                                 "standard deviation for poisson-gaussian noise: structure-free noise if the "
                                 "restoration is good")


def _number(kind, low, strict: bool = False):
    """An argparse type: a ``kind`` (int or float) of at least ``low`` (above it if
    ``strict``), so that a bad value is refused by the option's own name before anything is read."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < low or (strict and value == low):
            bound = f"above {low}" if strict else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_COUNT = _number(int, 1)
_POSITIVE = _number(float, 0, strict=True)


def _threads(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-dip",
        description="Deep Image Prior restoration: no training data, one image at a time.",
    )
    parser.add_argument("--version", action="version", version=f"napari-dip {__version__}")
    tasks = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    denoise = tasks.add_parser("denoise", help="remove noise")
    _add_fit_options(denoise)
    _add_trust_options(denoise, residual=True)

    sr = tasks.add_parser("super-resolve", help="upscale by 2, 3, 4 or 8")
    _add_fit_options(sr)
    _add_trust_options(sr)
    sr.add_argument("--factor", type=int, default=4, choices=(2, 3, 4, 8), help="upscaling factor (default: 4)")

    inpaint = tasks.add_parser("inpaint", help="fill holes given by a mask")
    _add_fit_options(inpaint)
    _add_trust_options(inpaint)
    inpaint.add_argument("--mask", type=Path, required=True,
                         help="mask image of the same height and width: nonzero = hole to fill")
    inpaint.add_argument("--mask-known", action="store_true",
                         help="nonzero in the mask marks the known pixels instead (e.g. 255 = known, "
                              "as in the masks published with the paper)")
    inpaint.add_argument("--raw-output", action="store_true",
                         help="write the network's whole image; by default the known pixels are kept "
                              "exactly as they are in INPUT and only the holes are filled")

    from .batch.command import add_arguments as add_batch_arguments

    batch = tasks.add_parser("batch", help="restore many files with the same settings (on Dask), resumably, "
                                           "with a report")
    add_batch_arguments(batch, _add_fit_options)

    demo = tasks.add_parser("demo", help="denoise a built-in example with known ground truth and report PSNR")
    demo.add_argument("--iterations", type=int, default=800, help="number of iterations (default: 800)")
    demo.add_argument("--preset", choices=("auto", "paper", "fast"), default="fast",
                      help="network preset (default: fast)")
    demo.add_argument("--size", type=int, default=128, help="side of the example image in pixels (default: 128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    demo.add_argument("--figure", type=Path, help="also save a noisy | restored | clean picture (PNG)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    gui = tasks.add_parser("gui", help="open napari with a sample image and the napari-dip widget")
    gui.add_argument("--task", choices=("denoise", "super-resolve", "inpaint"), default="denoise",
                     help="which widget and sample to open (default: denoise)")
    return parser


def format_rate(iterations_per_second: float) -> str:
    """Speed for a person: iterations per second, or seconds per iteration below one.

    >>> format_rate(12.34), format_rate(0.154), format_rate(0.0)
    ('12.3 it/s', '6.5 s/it', '? it/s')
    """
    rate = iterations_per_second
    if not (rate > 0 and math.isfinite(rate)):
        return "? it/s"
    return f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it"


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``.

    >>> format_duration(42.4), format_duration(200), format_duration(3723)
    ('0:42', '3:20', '1:02:03')
    """
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar_total(iteration: int, expected_stop: int | None, budget: int) -> int:
    """Where the progress bar ends: the iteration the fit is expected to stop at
    (:func:`napari_dip.engine.stopping.expected_stop`; it moves as the fit goes), never
    beyond the budget nor before now.

    >>> bar_total(250, 500, 3000), bar_total(2900, 3200, 3000), bar_total(40, None, 3000)
    (500, 3000, 3000)
    """
    end = budget if expected_stop is None else expected_stop
    return int(min(budget, max(iteration, end)))


def progress_postfix(iteration: int, total: int, iterations_per_second: float, loss: float) -> str:
    """What follows the bar: speed, time left to ``total``, loss.

    >>> progress_postfix(10, 500, 0.2, 0.01234)
    '5.0 s/it, ETA 40:50, loss 0.0123'
    >>> progress_postfix(500, 500, 30.0, 0.002)
    '30.0 it/s, loss 0.002'
    """
    parts = [format_rate(iterations_per_second)]
    if total > iteration and iterations_per_second > 0 and math.isfinite(iterations_per_second):
        parts.append(f"ETA {format_duration((total - iteration) / iterations_per_second)}")
    if math.isfinite(loss):
        parts.append(f"loss {loss:.3g}")
    return ", ".join(parts)


def _progress(snapshots, total: int, quiet: bool):
    """Pass snapshots through, drawing a progress bar that counts to the expected stop
    (of a tiled fit: one bar per tile, "tile k/n")."""
    if quiet:
        yield from snapshots
        return
    from tqdm import tqdm

    from .engine.tiling import tile_of

    # Our own rate and ETA (from the fit's clock, to the expected stop) instead of tqdm's.
    bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
    tile = None
    with tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, bar_format=bar_format) as bar:
        for snap in snapshots:
            here = tile_of(snap)
            if here is not None:
                if snap.done:  # the blended result: its counts are all tiles' together
                    yield snap
                    continue
                if here != tile:
                    if tile is not None:
                        bar.reset(total=bar_total(0, snap.expected_stop, snap.iterations))
                    tile = here
                    bar.set_description_str(f"tile {here[0]}/{here[1]}", refresh=False)
            bar.total = bar_total(snap.iteration, snap.expected_stop, snap.iterations)
            bar.set_postfix_str(
                progress_postfix(snap.iteration, bar.total, snap.iterations_per_second, snap.loss), refresh=False
            )
            bar.update(snap.iteration - bar.n)
            yield snap


def _start_total(budget: int, stopping) -> int:
    """The bar's end before the first snapshot: the earliest the stopping rule can end the fit."""
    if stopping.rule == "none":
        return budget
    return min(budget, stopping.warmup + stopping.patience)


def _axes_for(args, source) -> str:
    """The axes to restore ``source`` with: ``--axes``, else ``--channel-axis`` for a 3D
    image, else the file's own; a file that does not say is never guessed."""
    shape = source.data.shape
    if args.axes:
        return args.axes.strip().upper()
    if args.channel_axis is not None:
        if len(shape) != 3:
            raise InputError(f"--channel-axis applies to 3D images, not to {_sizes(shape)}; use --axes")
        return "CYX" if args.channel_axis == 0 else "YXC"
    if source.axes:
        return source.axes
    said = f", tifffile reads them as {source.file_axes}" if source.file_axes else ""
    examples = {3: "--axes ZYX for a Z-stack, TYX for a time-lapse, CYX for channels",
                4: "--axes TZYX for a time-lapse of Z-stacks, ZCYX for a Z-stack of channels"}
    example = examples.get(len(shape), f"--axes {'TZCYX'[-len(shape):]}" if len(shape) <= 5 else "--axes TZCYX")
    raise InputError(
        f"{args.input.name} does not say what its axes are (shape {_sizes(shape)}{said}); "
        f"give them with --axes, e.g. {example}"
    )


def _sizes(shape) -> str:
    return "x".join(str(n) for n in shape)


def _plan_line(args, source, layout, stream) -> str:
    """One line saying what is about to run: the image's layout, file and calibration, the
    planes, preset (and why), how a denoising fit runs, stopping, device; the preset and the
    way of fitting as ``stream`` (the :class:`~napari_dip.restore.Restoration`) settled them."""
    from .engine.devices import resolve_device
    from .engine.presets import stopping_for

    device = resolve_device(args.device)
    preset = stream.settings["preset"]
    why = f" (auto on {device.type})" if args.preset == "auto" else ""
    # The same network is fitted two ways: say which, as the widget names its output, and
    # why not when the preset would have recorrupted (correlated noise, none found, ...).
    if stream.recorrupts:
        why += ", by recorruption"
    elif stream.settings.get("recorruption_note"):
        why += f", recorruption {stream.settings['recorruption_note']}"
    noise = stream.settings.get("noise") if args.command == "denoise" else None
    if noise:
        # What auto picked, and the camera values given: they are used only by this model.
        how = "auto" if noise.get("requested") == "auto" else "as asked"
        camera = [f"{name} {noise[key]:g}" for name, key in (("gain", "gain_given"), ("offset", "offset"))
                  if noise.get("model") == "poisson-gaussian" and noise.get(key)]
        why += f", noise {noise.get('model')} ({', '.join([how, *camera])})"
    rule = stopping_for(args.command, args.stop, args.patience).rule
    stopping = "no automatic stopping" if rule == "none" else f"stopping {rule}"
    image = f"{layout.axes} {_sizes(layout.shape)} {source.data.dtype.name} ({source.describe()})"
    if getattr(args, "volumetric", False):
        from .volumes import describe_volumes

        image += ", " + describe_volumes(layout, volume_spacing(source.calibration))
    elif layout.is_stack:
        count = layout.planes
        how = "fitted independently" if args.no_warm_start or count == 1 else "warm-started"
        image += f", {count} plane{'s' if count != 1 else ''} {how}"
    memory = _memory_needed(args, preset, layout, source) + _tiles_note(args, preset, layout)
    return (f"{args.command} {args.input.name}: {image}, preset {preset}{why}, {stopping}, device {device}"
            f"{memory}")


def _tiles_note(args, preset: str, layout) -> str:
    """``", in 9 tiles of 256x256 px (...)"`` when the fit will be tiled (as the API decides:
    :func:`~napari_dip.engine.tiling.plan_fit_tiles`), else empty."""
    from .engine.presets import network_for
    from .engine.tiling import plan_fit_tiles

    if getattr(args, "volumetric", False):
        return ""
    try:
        net = network_for(args.command, preset, channels=args.channels)
        plan = plan_fit_tiles(net, max(1, min(layout.channels, 3)), layout.height, layout.width,
                              factor=getattr(args, "factor", None) or 1, runs=args.runs or 1, device=args.device,
                              tile_size=args.tile_size, overlap=args.tile_overlap)
    except (ValueError, AttributeError):
        return ""
    return "" if plan is None else f", {plan.describe()}"


def _memory_needed(args, preset: str, layout, source=None) -> str:
    """``", needs about 0.4 GiB"``: the fit's estimated peak memory for one plane (with
    ``--3d``, one volume), so a user sees before a long fit what it asks of the machine
    (empty if it cannot be told)."""
    from .engine.presets import network_for, plane_memory_bytes

    try:
        if getattr(args, "volumetric", False) and "Z" in layout.axes:
            from .volumes import volume_memory_bytes

            net = network_for(args.command, preset, channels=args.channels)
            spacing = None if source is None else volume_spacing(source.calibration)
            return f", needs about {volume_memory_bytes(net, layout, spacing) / 2**30:.1f} GiB"
        needed = plane_memory_bytes(args.command, preset, layout.channels, layout.height, layout.width,
                                    getattr(args, "factor", None), args.channels)
    except (ValueError, AttributeError):
        return ""
    return f", needs about {needed / 2**30:.1f} GiB"


def _plane_progress(pairs, count: int, total: int, quiet: bool, unit: str = "plane"):
    """Pass ``(index, snapshot)`` pairs through, drawing one bar per plane ("plane k/n";
    ``unit="volume"`` for 3D fits; "plane k/n, tile i/m" for tiled planes) that counts to
    the plane's (tile's) expected stop."""
    if quiet:
        yield from pairs
        return
    from tqdm import tqdm

    from .engine.tiling import tile_of

    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    current, number, tile = None, 0, None
    with tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, bar_format=bar_format,
              desc=f"{unit} 1/{count}") as bar:
        for index, snap in pairs:
            here = tile_of(snap)
            if here is not None and snap.done:  # a tiled plane's blended result: all its tiles' counts
                yield index, snap
                continue
            if index != current or here != tile:
                started = number > 0
                if index != current:
                    current, number = index, number + 1
                tile = here
                where = f", tile {here[0]}/{here[1]}" if here is not None else ""
                # Named before the reset, which redraws the bar: else the finished plane's
                # name is drawn once more at 0 %.
                bar.set_description_str(f"{unit} {number}/{count}{where}", refresh=False)
                if started:
                    bar.reset(total=bar_total(0, snap.expected_stop, snap.iterations))
            bar.total = bar_total(snap.iteration, snap.expected_stop, snap.iterations)
            bar.set_postfix_str(
                progress_postfix(snap.iteration, bar.total, snap.iterations_per_second, snap.loss), refresh=False
            )
            bar.update(snap.iteration - bar.n)
            yield index, snap


def _report_warnings(caught) -> None:
    """Input warnings as one line each; anything else as Python would show it."""
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            print(f"napari-dip: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _refuse_to_replace_inputs(output: Path, args) -> None:
    """Input files are never modified: not even ``--overwrite`` lets the result replace the
    image or the mask it was made from."""
    for what, path in (("input image", args.input), ("mask", getattr(args, "mask", None))):
        if path is not None and output.exists() and Path(path).exists() and output.samefile(path):
            raise InputError(f"{output} is the {what}; write the result to another file")


def _run_task(args) -> int:
    from .io import check_writable, write_image_or_rescue

    output = check_writable(args.output, args.overwrite)
    _refuse_to_replace_inputs(output, args)
    extra_paths = _check_extra_outputs(args)
    extras: dict = {}
    result, provenance, summary = restore_file(args, extras)
    write_image_or_rescue(output, result, provenance, overwrite=args.overwrite)
    print(f"wrote {output} ({summary})")
    for what, path in extra_paths.items():
        if what == "residual":
            from .residual import noise_residual

            data = noise_residual(extras["input"], result.data, provenance.get("noise"),
                                  axes=provenance.get("axes"))
        else:
            # Missing when no plane was fitted (all copied through): no spread anywhere.
            data = extras.get("uncertainty")
            if data is None:
                import numpy as np

                data = np.zeros(result.data.shape, np.float32)
        record = {**provenance, "content": what, "result": str(output)}
        write_image_or_rescue(path, replace(result, data=data), record, overwrite=args.overwrite)
        print(f"wrote {path} ({what})")
    return 0


def _check_extra_outputs(args) -> dict:
    """The --uncertainty and --residual files, checked before the fit."""
    from .io import check_writable

    paths = {}
    for what in ("uncertainty", "residual"):
        path = getattr(args, what, None)
        if path is None:
            continue
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"--{what} holds float values: name a .tif file, not {path.name}")
        if what == "uncertainty" and (args.runs or 1) < 2:
            raise InputError("--uncertainty is the spread of several runs: add --runs 2 (or more)")
        if what == "uncertainty" and getattr(args, "volumetric", False):
            raise InputError("--uncertainty needs several runs, and a 3D fit runs once: leave out --3d or --uncertainty")
        taken = [Path(args.output).resolve(), *(p.resolve() for p in paths.values())]
        if path.resolve() in taken:
            raise InputError(f"--{what} {path} is also the result or another output; name another file")
        _refuse_to_replace_inputs(path, args)  # neither the image nor the mask, even with --overwrite
        paths[what] = check_writable(path, args.overwrite)
    return paths


def restore_file(args, extras: dict | None = None) -> tuple:
    """Restore the file ``args.input`` as the command line's options say, writing nothing:
    ``(result, provenance, summary)``, the result an :class:`~napari_dip.io.ImageFile` to
    write to ``args.output``. The single-file commands and ``napari-dip batch`` (one call per
    file, :mod:`napari_dip.batch`) both go through here. ``extras``, if given, receives
    ``"input"`` (the image read) and ``"uncertainty"`` (the runs' per-pixel spread) when
    there are several runs."""
    from .axes import layout_for
    from .io import check_png, imagej_conversion, read_image
    from .engine.presets import stopping_for
    from .restore import iter_restore, iter_restore_planes, last_snapshot

    output = Path(args.output)
    source = read_image(args.input)
    if extras is not None:
        extras["input"] = source.data  # the residual needs it: the file is not read twice
    layout = layout_for(source.data.shape, _axes_for(args, source))
    if args.axes and source.axes and layout.axes != source.axes:
        # Allowed (a file can be wrong), but its calibration is then read by other letters:
        # a Z step kept on what is now a time axis, say.
        print(f"napari-dip: warning: --axes {layout.axes} overrides the file's own axes {source.axes}",
              file=sys.stderr)
    if output.suffix.lower() == ".png":
        check_png(output, source.data)  # the result has the input's dtype: say so before the fit
    options = {}
    factor = None
    if args.command == "inpaint":
        options["mask"] = read_image(args.mask).data
        options["mask_marks"] = "known" if args.mask_known else "holes"
        options["keep_known"] = not args.raw_output
    if args.command == "super-resolve":
        factor = options["factor"] = args.factor
    if args.progress_every < 1:
        raise InputError("--progress-every must be at least 1")
    settings = dict(
        axes=layout.axes,
        preset=args.preset,
        snapshot_every=args.progress_every,
        snapshot_seconds=None if args.quiet else PROGRESS_SECONDS,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        reg_noise_std=args.reg_noise_std,
        channels=args.channels,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        stopping=args.stop,
        runs=args.runs,
        threads=args.threads,
        compile=getattr(args, "compile", None),
        cuda_graphs=getattr(args, "cuda_graphs", None),
        patience=args.patience,
        tile_size=getattr(args, "tile_size", None),
        tile_overlap=getattr(args, "tile_overlap", None),
        noise=getattr(args, "noise", "auto"),
        noise_fit=getattr(args, "noise_fit", None),
        recorrupt=getattr(args, "recorrupt", None),
        gain=getattr(args, "gain", None),
        offset=getattr(args, "offset", None),
        **options,
    )
    volumetric = getattr(args, "volumetric", False)
    # After every check of the input, right before what starts CUDA (sizing the tiles).
    _say_cuda_is_starting(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        if volumetric:
            from .volumes import iter_restore_volumes

            stream = iter_restore_volumes(args.command, source.data, spacing=volume_spacing(source.calibration),
                                          **settings)
        elif layout.is_stack:
            stream = iter_restore_planes(args.command, source.data, warm_start=not args.no_warm_start, **settings)
        else:
            stream = iter_restore(args.command, source.data, **settings)
    _report_warnings(caught)
    plan = _plan_line(args, source, layout, stream)
    budget = stream.iterations  # the caller's, or the preset's: fast runs shorter SR and inpainting fits
    # napari-dip batch watches the fit (progress to its client, cancel requests to the fit).
    watch = getattr(args, "watch_snapshots", None)
    if watch is not None:
        stream = watch(stream)
    # The metadata the result is written with: the file's, with the axes used.
    result = replace(source.zoomed(source.data, factor), axes=layout.axes)
    conversion = imagej_conversion(result, output)
    if conversion:
        print(f"napari-dip: warning: {conversion}", file=sys.stderr)
    print(plan, flush=True)
    total = _start_total(budget, stopping_for(args.command, args.stop, args.patience))
    if volumetric:
        data, provenance, summary = _fit_volumes(stream, layout, source.data.dtype, total, args)
    elif layout.is_stack:
        data, provenance, summary = _fit_planes(stream, layout, source.data.dtype, factor, total, args, extras)
    else:
        final = last_snapshot(_progress(stream, total, args.quiet))
        data = final.average
        if extras is not None and final.uncertainty is not None:
            extras["uncertainty"] = final.uncertainty
        provenance = {**final.settings, "iterations_run": final.iteration, "stop_reason": final.stop_reason,
                      "best_iteration": final.best_iteration}
        chosen = f", result from iteration {final.best_iteration}" if final.best_iteration else ""
        if final.settings.get("tiling"):
            chosen += f", in {final.settings['tiling']['count']} tiles"
        summary = (f"{final.iteration} iterations in {final.elapsed:.1f} s, "
                   f"{format_rate(final.iterations_per_second)}, stopped by {final.stop_reason}{chosen}")
    provenance["source"] = str(args.input)
    provenance["axes"] = layout.axes
    return result.zoomed(data, None), provenance, summary


def _say_cuda_is_starting(args) -> None:
    """A line on stderr before CUDA starts (seconds in which nothing else can be said), when
    the fit is about to start it and a person watches: not with ``-q``, nor in a batch,
    whose workers report through their client."""
    from .engine.devices import cuda_start_pending

    if args.quiet or getattr(args, "watch_snapshots", None) is not None:
        return
    if cuda_start_pending(args.device):
        print("napari-dip: starting CUDA (a process's first use of the GPU takes several seconds)...",
              file=sys.stderr, flush=True)


def _fit_planes(pairs, layout, dtype, factor, total, args, extras: dict | None = None) -> tuple:
    """Run a stack's plane-by-plane fits to their end: the whole result, the provenance
    (the first fitted plane's settings, each plane's outcome) and a summary for a person."""
    finals = [(index, snap) for index, snap in _plane_progress(pairs, layout.planes, total, args.quiet) if snap.done]
    output = layout.assemble(((index, snap.average) for index, snap in finals), dtype, factor)
    if extras is not None and any(snap.uncertainty is not None for _, snap in finals):
        import numpy as np

        # Planes copied through (constant) have no runs: their spread is 0.
        spreads = ((i, np.zeros(s.average.shape, np.float32) if s.uncertainty is None else s.uncertainty)
                   for i, s in finals)
        extras["uncertainty"] = layout.assemble(spreads, np.float32, factor)
    # Constant planes and planes without holes are copied through, not fitted.
    fitted = [snap for _, snap in finals if not snap.settings.get("copied")] or [finals[-1][1]]
    provenance = {key: value for key, value in fitted[0].settings.items() if key not in ("plane", "warm_start")}
    warm = not args.no_warm_start and layout.planes > 1
    provenance["warm_start"] = warm
    if warm and len(fitted) > 1:
        provenance["warm_start_fit"] = fitted[-1].settings.get("fit")
    provenance["planes"] = layout.planes
    provenance["plane_axes"] = layout.iterated
    provenance["plane_results"] = [
        {"index": list(index), "iterations_run": snap.iteration, "stop_reason": snap.stop_reason,
         "best_iteration": snap.best_iteration, "backtracks": snap.backtracks,
         "warm_start_from": (snap.settings.get("warm_start") or {}).get("from"),
         "warm_start_restarted": bool(snap.settings.get("warm_start_restarted")), "drift": snap.settings.get("drift"),
         "seconds": round(snap.elapsed, 3)}
        for index, snap in finals
    ]
    reasons: dict[str, int] = {}
    for _, snap in finals:
        reasons[snap.stop_reason] = reasons.get(snap.stop_reason, 0) + 1
    provenance["iterations_run"] = sum(snap.iteration for _, snap in finals)
    provenance["stop_reasons"] = reasons
    seconds = sum(snap.elapsed for _, snap in finals)
    stopped = ", ".join(f"{reason} {count}x" for reason, count in reasons.items())
    summary = (f"{len(finals)} planes, {provenance['iterations_run']} iterations in {seconds:.1f} s, "
               f"stopped by {stopped}")
    restarted = [snap.settings["drift"] for _, snap in finals if snap.settings.get("warm_start_restarted")]
    if restarted:
        summary += (f", {len(restarted)} fitted afresh where the picture had drifted more than "
                    f"{restarted[0]['restart_above_pixels']:g} px from its warm-start chain's first plane")
    return output, provenance, summary


def volume_spacing(calibration) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel spacing from a file's calibration, or ``None`` when it does not
    give all three in one unit (the 3D network then takes the voxels as cubes)."""
    from .io import _short_unit

    if None in (calibration.z, calibration.y, calibration.x):
        return None
    if calibration.z_unit and _short_unit(calibration.z_unit) != _short_unit(calibration.unit):
        return None
    return (float(calibration.z), float(calibration.y), float(calibration.x))


def _fit_volumes(pairs, layout, dtype, total, args) -> tuple:
    """Run a stack's 3D fits (one per time point) to their end: the whole result, the
    provenance (the first volume's settings, each volume's outcome) and a summary."""
    import numpy as np

    from .volumes import volume_axes

    count = max(1, int(np.prod([n for n, a in zip(layout.shape, layout.axes) if a == "T"], dtype=np.int64)))
    finals = [(index, snap) for index, snap in _plane_progress(pairs, count, total, args.quiet, "volume") if snap.done]
    output = np.zeros(layout.shape, dtype)
    outer_axes = [i for i, letter in enumerate(layout.axes) if letter not in volume_axes(layout)]
    for index, snap in finals:
        selector = [slice(None)] * len(layout.axes)
        for axis, value in zip(outer_axes, index):
            selector[axis] = value
        output[tuple(selector)] = snap.average
    provenance = {key: value for key, value in finals[0][1].settings.items() if key != "volume"}
    provenance["volume_results"] = [
        {"index": list(index), "iterations_run": snap.iteration, "stop_reason": snap.stop_reason,
         "best_iteration": snap.best_iteration, "backtracks": snap.backtracks, "seconds": round(snap.elapsed, 3)}
        for index, snap in finals
    ]
    provenance["iterations_run"] = sum(snap.iteration for _, snap in finals)
    seconds = sum(snap.elapsed for _, snap in finals)
    reasons = ", ".join(sorted({str(snap.stop_reason) for _, snap in finals}))
    summary = (f"{len(finals)} volume{'s' if len(finals) != 1 else ''} in 3D, {provenance['iterations_run']} "
               f"iterations in {seconds:.1f} s, stopped by {reasons}")
    return output, provenance, summary


def _run_demo(args) -> int:
    from .demo import run_demo

    _say_cuda_is_starting(args)
    run_demo(
        iterations=args.iterations,
        preset=args.preset,
        size=args.size,
        seed=args.seed,
        device=args.device,
        figure=args.figure,
        progress=None if args.quiet else (lambda snaps, total: _progress(snaps, total, False)),
    )
    return 0


def display_problem(environ=None, platform: str | None = None) -> str | None:
    """Why a Qt window cannot open here, or ``None``: on Linux, neither an X11 nor a
    Wayland display, and no display-less Qt platform (``QT_QPA_PLATFORM=offscreen``) chosen.
    Qt itself would abort the process (status 134) with several lines about xcb plugins.

    >>> display_problem({}, "linux") is not None, display_problem({"DISPLAY": ":0"}, "linux")
    (True, None)
    >>> display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux"), display_problem({}, "darwin")
    (None, None)
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    qt_platform = environ.get("QT_QPA_PLATFORM", "").strip()
    if qt_platform and not qt_platform.startswith(("xcb", "wayland")):
        return None
    return ("no display (DISPLAY and WAYLAND_DISPLAY are not set): run 'napari-dip gui' in a desktop "
            "session (or over ssh -X); without one, use 'napari-dip denoise|super-resolve|inpaint'")


def _run_gui(args) -> int:
    problem = display_problem()
    if problem:  # before importing Qt, which would abort the process
        raise InputError(problem)
    try:
        import napari
    except ImportError as error:
        raise InputError('napari is not installed; install it with pip install "napari-dip[napari]"') from error
    from ._widget import open_with_sample

    open_with_sample(task=args.task)
    napari.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "gui":
            return _run_gui(args)
        if args.command == "batch":
            from .batch.command import run_batch

            return run_batch(args)
        return _run_task(args)
    except (InputError, DeviceMemoryError, FloatingPointError) as error:
        print(f"napari-dip: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("napari-dip: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
