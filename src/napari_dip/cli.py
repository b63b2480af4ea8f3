"""Command line: ``napari-dip denoise|super-resolve|inpaint INPUT -o OUTPUT`` and ``napari-dip demo``.

Errors a user can fix (missing file, wrong mask shape, too small an image, unsupported
dtype, output exists) end the program with status 2 and one line on standard error;
nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import DeviceMemoryError, InputError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="image to restore (.tif, .tiff or .png)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the result (.tif or .png)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper",
                        help="paper: the published network and schedule; fast: 48-channel network (default: paper)")
    parser.add_argument("--iterations", type=int, help="number of iterations (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--reg-noise-std", type=float, help="jitter of the input noise (default: the preset's; for denoising, a third of the estimated noise level, within 1/30 to 1/15)")
    parser.add_argument("--channels", type=int, help="channels per scale of the network (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"),
                        help="mixed precision for the network (default: float32)")
    parser.add_argument("--stop", choices=("wmv", "validation", "none"),
                        help="automatic stopping rule; none runs the whole budget (default: the task's rule)")
    parser.add_argument("--patience", type=int,
                        help="iterations without improvement before stopping (default: the rule's)")
    parser.add_argument("--runs", type=int, help="average this many independent fits, run side by side (default: 1)")
    parser.add_argument("--channel-axis", type=int, choices=(0, -1),
                        help="axis of the channels of a 3D image (default: guess)")
    parser.add_argument("--progress-every", type=int, default=10, metavar="N",
                        help="update the progress bar every N iterations (default: 10)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-dip",
        description="Deep Image Prior restoration: no training data, one image at a time.",
    )
    parser.add_argument("--version", action="version", version=f"napari-dip {__version__}")
    tasks = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    denoise = tasks.add_parser("denoise", help="remove noise")
    _add_fit_options(denoise)

    sr = tasks.add_parser("super-resolve", help="upscale by 2, 3, 4 or 8")
    _add_fit_options(sr)
    sr.add_argument("--factor", type=int, default=4, choices=(2, 3, 4, 8), help="upscaling factor (default: 4)")

    inpaint = tasks.add_parser("inpaint", help="fill holes given by a mask")
    _add_fit_options(inpaint)
    inpaint.add_argument("--mask", type=Path, required=True,
                         help="mask image of the same height and width: nonzero = hole to fill")

    demo = tasks.add_parser("demo", help="denoise a built-in example with known ground truth and report PSNR")
    demo.add_argument("--iterations", type=int, default=800, help="number of iterations (default: 800)")
    demo.add_argument("--preset", choices=("paper", "fast"), default="fast", help="network preset (default: fast)")
    demo.add_argument("--size", type=int, default=128, help="side of the example image in pixels (default: 128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    demo.add_argument("--figure", type=Path, help="also save a noisy | restored | clean picture (PNG)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    gui = tasks.add_parser("gui", help="open napari with a sample image and the napari-dip widget")
    gui.add_argument("--task", choices=("denoise", "super-resolve", "inpaint"), default="denoise",
                     help="which widget and sample to open (default: denoise)")
    return parser


def _progress(snapshots, total: int, quiet: bool):
    """Pass snapshots through, drawing a progress bar with iterations/s and the loss."""
    if quiet:
        yield from snapshots
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr) as bar:
        for snap in snapshots:
            if snap.done:  # stopped early by its rule: the bar ends where the fit did
                bar.total = snap.iteration
            bar.update(snap.iteration - bar.n)
            bar.set_postfix(loss=f"{snap.loss:.3g}", refresh=False)
            yield snap


def _run_task(args) -> int:
    from .io import ImageFile, check_png, check_writable, read_image, write_image
    from .restore import iter_restore, last_snapshot

    output = check_writable(args.output, args.overwrite)
    source = read_image(args.input)
    if output.suffix.lower() == ".png":
        check_png(output, source.data)  # the result has the input's dtype: say so before the fit
    options = {}
    factor = None
    if args.command == "inpaint":
        options["mask"] = read_image(args.mask).data
    if args.command == "super-resolve":
        factor = options["factor"] = args.factor
    if args.progress_every < 1:
        raise InputError("--progress-every must be at least 1")

    snapshots = iter_restore(
        args.command,
        source.data,
        preset=args.preset,
        snapshot_every=args.progress_every,
        channel_axis=args.channel_axis,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        reg_noise_std=args.reg_noise_std,
        channels=args.channels,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        stopping=args.stop,
        runs=args.runs,
        patience=args.patience,
        **options,
    )
    total = args.iterations or _preset_iterations(args.command, args.preset, factor)
    final = last_snapshot(_progress(snapshots, total, args.quiet))

    # A finer pixel grid: pixels per unit grow by the factor, so physical size is kept.
    resolution = source.resolution
    if factor and resolution is not None:
        resolution = (resolution[0] * factor, resolution[1] * factor)
    provenance = {**final.settings, "iterations_run": final.iteration, "stop_reason": final.stop_reason,
                  "best_iteration": final.best_iteration, "source": str(args.input)}
    write_image(output, ImageFile(final.average, resolution, source.resolution_unit, source.extra), provenance,
                overwrite=args.overwrite)
    chosen = f", result from iteration {final.best_iteration}" if final.best_iteration else ""
    print(f"wrote {output} ({final.iteration} iterations in {final.elapsed:.1f} s, "
          f"{final.iterations_per_second:.2f} it/s, stopped by {final.stop_reason}{chosen})")
    return 0


def _preset_iterations(task: str, preset: str, factor: int | None) -> int:
    from .presets import settings_for

    return settings_for(task, preset, factor=factor)[1].iterations


def _run_demo(args) -> int:
    from .demo import run_demo

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


def _run_gui(args) -> int:
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
        return _run_task(args)
    except (InputError, DeviceMemoryError, FloatingPointError) as error:
        print(f"napari-dip: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("napari-dip: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
