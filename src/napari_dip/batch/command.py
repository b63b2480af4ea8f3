"""``napari-dip batch INPUT... --task TASK --out DIR [fit options]``.

Exit status: 0 when every input is done (now or before), 1 when any failed (the report
says which and why) or any was cancelled, 2 for a usage error found before anything ran,
130 when interrupted with Ctrl-C (what was finished is kept, fits in work stop and write
nothing, the report says which inputs were interrupted; the same command again does the rest).

The progress bar counts images and shows each image in work with its iteration and where
it is expected to end (``img3.tif 120/~480``: automatic stopping's estimate; the budget
without ``~``), updated at each fit snapshot (``--progress-every``); without a terminal
(CI logs) it is redrawn at most every 10 seconds.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser, add_fit_options) -> None:
    """The batch's own options, then the single-file commands' fit options
    (``add_fit_options``, from :mod:`napari_dip.cli`)."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.tif, .tiff, .png), OME-Zarr images (.zarr folders; needs zarr), "
                             "folders holding them, or glob patterns (quote them: 'data/**/*.tif')")
    parser.add_argument("--task", choices=("denoise", "super-resolve", "inpaint"), required=True,
                        help="what to do to every input")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (made if missing): results under their inputs' names, a NAME.json "
                             "record next to each, report.csv and report.html")
    parser.add_argument("--mask-pattern", metavar="PATTERN",
                        help="inpaint: each input's mask, relative to its folder, {stem} being the input's name "
                             "without suffix, e.g. '{stem}_mask.png' or 'masks/{stem}.tif'")
    parser.add_argument("--force", action="store_true",
                        help="redo every input; by default inputs whose record shows the same input content and "
                             "settings are skipped")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a running Dask scheduler, e.g. tcp://host:8786 (default: DASK_SCHEDULER_ADDRESS, "
                             "else a local cluster)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes of the local cluster (default: one per GPU where dask-cuda is "
                             "installed and sees GPUs, one for GPU fits without it, else one per core); 0 runs the "
                             "files one after another in this process, without Dask")
    parser.add_argument("--factor", type=int, default=4, choices=(2, 3, 4, 8),
                        help="super-resolve: upscaling factor (default: 4)")
    parser.add_argument("--mask-known", action="store_true",
                        help="inpaint: nonzero in the masks marks the known pixels instead of the holes")
    parser.add_argument("--raw-output", action="store_true",
                        help="inpaint: write the network's whole image, not only the filled holes")
    add_fit_options(parser, single_file=False)


def run_batch(args) -> int:
    from .run import _BATCH_ONLY, restore_files

    options = {key: value for key, value in vars(args).items() if key not in _BATCH_ONLY}
    if options.get("threads") is None:
        options.pop("threads")  # restore_files' default: one thread per fit
    if args.workers is not None and args.workers < 0:
        from ..errors import InputError

        raise InputError("--workers must be 0 (this process) or more")
    try:
        rows = restore_files(args.inputs, task=args.task, out=args.out, mask_pattern=args.mask_pattern,
                             force=args.force, scheduler=args.scheduler, workers=args.workers,
                             progress=not args.quiet, **options)
    except KeyboardInterrupt:
        said = _counts_in_report(args.out / "report.csv")
        print(f"napari-dip: interrupted{': ' + said if said else ''}; finished results are kept in {args.out}: "
              "run the same command again to do the rest", file=sys.stderr)
        return 130
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    for row in rows:
        if row["status"] == "failed":
            said = row["error"] if row["input"] in row["error"] else f"{row['input']}: {row['error']}"
            print(f"napari-dip: failed: {said}", file=sys.stderr)
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    print(f"{len(rows)} inputs: {summary}; report in {args.out / 'report.html'}")
    return EXIT_FAILED if counts.get("failed") or counts.get("cancelled") else 0


def _counts_in_report(report) -> str:
    """``3 done, 5 interrupted`` from the report an interrupted batch wrote ('' without one)."""
    try:
        with open(report, newline="") as handle:
            statuses = [row["status"] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error):
        return ""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in counts.items())
