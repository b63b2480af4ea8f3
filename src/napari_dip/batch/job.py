"""One file of a batch, as a Dask worker (or this process) runs it: check whether it is
done already, restore it through the single-file path of the command line
(:func:`napari_dip.cli.restore_file`), write the result and its record atomically, and
return the report row. Nothing here raises for a bad file: the row says what went wrong.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import time
from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError
from .inputs import Item
from .progress import FitCancelled, FitWatch
from .records import file_sha256, is_done, partial_path, read_record, settings_of, write_json_atomic

#: The columns of report.csv, in order.
COLUMNS = ("input", "output", "mask", "status", "error", "stop_reason", "iterations", "seconds",
           "noise_estimate", "warnings")


def empty_row(item: Item, status: str, error: str = "") -> dict:
    """A report row without a result's figures; ``output`` names a file only where there is
    a result (``done``, ``skipped``), not where one would have gone."""
    output = str(item.output) if status in ("done", "skipped") else ""
    return {"input": str(item.input), "output": output, "mask": str(item.mask) if item.mask else "",
            "status": status, "error": error, "stop_reason": "", "iterations": "", "seconds": "",
            "noise_estimate": "", "warnings": ""}


def row_from_record(item: Item, record: dict, status: str) -> dict:
    """A report row from a result's record (a result done now, or by an earlier run)."""
    row = empty_row(item, status)
    noise = record.get("noise_estimate")
    row.update(stop_reason=record.get("stop_reason") or "", iterations=record.get("iterations", ""),
               seconds=record.get("seconds", ""), noise_estimate="" if noise is None else noise,
               warnings=" | ".join(record.get("warnings") or []))
    return row


def hashes(item: Item) -> tuple[str, str | None]:
    """SHA-256 of the input and of its mask (``None`` without one)."""
    return file_sha256(item.input), (file_sha256(item.mask) if item.mask else None)


def done_row(item: Item, task: str, options: dict, batch: str | None = None) -> dict | None:
    """The row of an item whose result is already there, or ``None`` if it must be done:
    ``done`` when batch ``batch`` made it (a task Dask ran again after its worker died
    having finished it), else ``skipped``. An unreadable input is left to
    :func:`restore_one`, which reports it."""
    return _done_check(item, task, options, batch)[0]


def _done_check(item: Item, task: str, options: dict, batch: str | None) -> tuple[dict | None, tuple | None]:
    """:func:`done_row`, and the input's and mask's hashes where it had to read them
    (``None`` where it did not), so that a fit that follows need not read a large input again."""
    record = read_record(item.sidecar)
    if not record or record.get("status") != "done":
        return None, None  # nothing finished for it: no need to read the whole input
    try:
        hashed = hashes(item)
        settings = settings_of(task, options)
    except OSError:
        return None, None
    except InputError:  # a bad preset or factor: restore_one reports it on the item's row
        return None, hashed
    if is_done(record, *hashed, settings, item.output):
        this_batch = batch is not None and record.get("batch") == batch
        return row_from_record(item, record, "done" if this_batch else "skipped"), hashed
    return None, hashed


def restore_one(item: Item, task: str, options: dict, force: bool = False, batch: str | None = None,
                channel=None) -> dict:
    """Restore ``item`` with ``options`` (the command line's option names) unless its result
    is already there (``force`` redoes results of earlier batches); return its report row.
    ``batch`` names the batch this call belongs to; it goes into the record. ``channel``
    (:mod:`napari_dip.batch.progress`) carries the fit's progress to the client and its
    cancel request to the fit: a cancelled fit stops, writes nothing, and its row is
    ``cancelled`` (a rerun does it)."""
    if item.problem:
        return empty_row(item, "failed", item.problem)
    # Also catches a task that Dask runs again after its worker died having finished it:
    # that result is this batch's, so it is neither redone nor reported as skipped.
    row, hashed = _done_check(item, task, options, batch)
    if row is not None and (not force or row["status"] == "done"):
        return row
    started = time.perf_counter()
    watch = None if channel is None else FitWatch(channel, batch or "", str(item.input))
    try:
        if watch is not None:
            watch.check_cancel(force=True)  # a task that starts after the cancel does nothing
        # Before the fit: the record needs them, and a bad preset or factor fails here.
        settings = settings_of(task, options)
        input_hash, mask_hash = hashed or hashes(item)
        args = Namespace(**{**options, "command": task, "input": item.input, "output": item.output,
                            "mask": item.mask, "overwrite": True, "quiet": True, "watch_snapshots": watch})
        result, provenance, warnings = _restore_quietly(args)
    except FitCancelled as stop:
        said = f"at iteration {stop.iteration}" if stop.iteration else "before its fit started"
        return empty_row(item, "cancelled", f"cancelled {said}; nothing written")
    except Exception as error:  # noqa: BLE001 - a bad file must not end the batch; the row says why
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        from ..errors import DeviceMemoryError

        if not isinstance(error, (InputError, DeviceMemoryError, FloatingPointError, OSError)):
            message = f"{type(error).__name__}: {message}"
        return empty_row(item, "failed", message)
    finally:
        if watch is not None:
            watch.finish()
    seconds = round(time.perf_counter() - started, 3)
    record = {
        "napari_dip": _version(),
        "status": "done",
        "batch": batch,
        "task": task,
        "input": {"path": str(item.input.resolve()), "sha256": input_hash},
        "mask": {"path": str(item.mask.resolve()), "sha256": mask_hash} if item.mask else None,
        "output": {"path": str(item.output.resolve())},
        "settings": settings,
        "seed": (provenance.get("fit") or {}).get("seed", options.get("seed")),
        "stop_reason": provenance.get("stop_reason") or _stop_reasons(provenance),
        "iterations": provenance.get("iterations_run"),
        "seconds": seconds,
        "noise_estimate": provenance.get("noise_sigma_estimate"),
        "warnings": warnings,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "process": os.getpid(),
        "process_peak_rss_mib": _peak_rss_mib(),
        "provenance": provenance,
    }
    try:
        record["output"]["sha256"] = _write_result(item.output, result, provenance)
        write_json_atomic(item.sidecar, record)
    except Exception as error:  # noqa: BLE001 - the disk filled up, the folder went away: report it
        return empty_row(item, "failed", f"cannot write {item.output}: {error}")
    return row_from_record(item, record, "done")


def _restore_quietly(args) -> tuple:
    """:func:`~napari_dip.cli.restore_file` with what it prints (the plan line, input
    warnings) caught: the warnings go into the record and the report."""
    from ..cli import restore_file

    said, complained = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(complained):
        result, provenance, _summary = restore_file(args)
    warnings = [line.removeprefix("napari-dip: warning: ") for line in complained.getvalue().splitlines()
                if line.startswith("napari-dip: warning: ")]
    return result, provenance, warnings


def _write_result(output: Path, result, provenance: dict) -> str:
    """Write under a temporary name, then rename into place; the result's SHA-256."""
    from ..io import write_image

    partial = partial_path(output)
    try:
        write_image(partial, result, provenance, overwrite=True)
        digest = file_sha256(partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return digest


def _stop_reasons(provenance: dict) -> str:
    """A stack's stop reasons in one cell: ``budget 3x, wmv 2x``."""
    reasons = provenance.get("stop_reasons") or {}
    return ", ".join(f"{reason} {count}x" for reason, count in reasons.items())


def _peak_rss_mib() -> float | None:
    """The peak resident memory of this process so far (a Dask worker's: its fits and
    PyTorch), in MiB; ``None`` where the platform does not say."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def _version() -> str:
    from .. import __version__

    return __version__
