"""Run a batch: find the inputs, skip those already done, hand the rest to Dask (or run
them here), and write the report.

By default the work goes to a ``LocalCluster`` on this machine with one single-threaded
worker process per core (each fit with ``threads=1``): images, not the threads of one fit,
are spread over the cores, and PyTorch starts once per worker, not once per file. Where
``dask-cuda`` is installed and sees CUDA devices, a ``LocalCUDACluster`` with one worker
per GPU instead (:mod:`.cluster`).
``scheduler`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable) names a running
Dask scheduler instead; ``workers=0`` runs every file in this process, without Dask.

If a worker dies mid-file, Dask gives its task to another worker (up to the scheduler's
``allowed-failures``, 3 by default); results and records are written atomically, and a
task run again finds a finished result's record and does not redo it.
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import InputError
from .inputs import Item, plan_items
from .job import done_row, empty_row, restore_one
from .progress import TOPIC, BatchProgress, DaskChannel, LocalChannel, cancel_event_name
from .records import remove_partials
from .report import write_reports

TASKS = ("denoise", "super-resolve", "inpaint")
#: Batch options that are not fit options (they say where things are and how to run).
_BATCH_ONLY = ("command", "inputs", "out", "force", "scheduler", "workers", "mask_pattern", "quiet", "task")
#: Seconds between checks for a cancel request and fit progress while waiting for results.
POLL_SECONDS = 0.25
#: After a cancel, how long the fits in work get to stop at their next snapshot before the
#: batch stops waiting for them (a snapshot comes every ``progress_every`` iterations).
CANCEL_GRACE_SECONDS = 60.0


def fit_defaults(task: str) -> dict:
    """The fit options of ``napari-dip batch`` with their defaults, by option name
    (``iterations``, ``stop``, ``factor``, ...), as the command line defines them."""
    from ..cli import build_parser

    args = build_parser().parse_args(["batch", "-", "--task", task, "--out", "-"])
    options = {key: value for key, value in vars(args).items() if key not in _BATCH_ONLY}
    if options.get("threads") is None:
        options["threads"] = 1  # one image per core: a fit's own threads would compete with the others
    return options


def restore_files(
    inputs,
    *,
    task: str,
    out,
    client=None,
    mask_pattern: str | None = None,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=True,
    cancel=None,
    on_row=None,
    **fit_options,
) -> list[dict]:
    """Restore many files with the same settings; return the report rows (one per input).

    Parameters
    ----------
    inputs : str, path, or a list of them
        Files, folders (their TIFF and PNG files) and glob patterns.
    task : {"denoise", "super-resolve", "inpaint"}
    out : path
        The output folder (made if missing): each result under its input's file name, its
        record ``NAME.json`` next to it, and ``report.csv`` and ``report.html``.
    client : distributed.Client, optional
        Run on this Dask client. Without one: ``scheduler``, ``DASK_SCHEDULER_ADDRESS``,
        else a local cluster of ``workers`` single-threaded worker processes (default: one
        per GPU where dask-cuda sees GPUs and ``device`` is ``auto`` or ``cuda``, else one
        per core); ``workers=0`` runs in this process, without Dask.
    mask_pattern : str
        Inpainting: each input's mask, e.g. ``"{stem}_mask.png"``
        (:func:`~napari_dip.batch.inputs.mask_for`).
    force : bool
        Redo inputs whose result is already there with the same input and settings.
    progress : bool or callable
        ``True``: a progress bar over images on standard error, showing each image in work
        with its iteration and where it is expected to stop. A callable is called (in this
        thread) with every progress message instead: ``kind="fit"`` with a fit's
        ``input``, ``iteration``, ``budget``, ``expected_stop``, ``part``, ...
        (:class:`~napari_dip.batch.progress.FitWatch`), ``kind="image"`` with a finished
        input's ``input`` and ``status``; both with ``images_done`` and ``images_total``.
    cancel : threading.Event, optional
        Set it to stop: the fits in work stop at their next snapshot and write nothing,
        files not started are left; both are reported ``cancelled`` and a rerun does them.
    on_row : callable, optional
        Called with each row as it comes (in this thread).
    **fit_options
        The command line's fit options by name: ``iterations``, ``preset``, ``stop``,
        ``seed``, ``channels``, ``factor``, ``mask_known``, ... (:func:`fit_defaults`).

    Rows have the columns of :data:`~napari_dip.batch.job.COLUMNS`; ``status`` is
    ``done``, ``skipped`` (done before, same input and settings), ``failed`` (``error``
    says why), or ``cancelled``.
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    options = fit_defaults(task)
    unknown = sorted(set(fit_options) - set(options))
    if unknown:
        raise TypeError(f"unknown fit option(s) {', '.join(unknown)}; known: {', '.join(sorted(options))}")
    options.update(fit_options)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(out)
    items = plan_items(inputs, out, task, mask_pattern)
    out.mkdir(parents=True, exist_ok=True)
    from ..io import check_folder_writable

    check_folder_writable(out)
    remove_partials(out)

    rows: list[dict | None] = [None] * len(items)
    batch = uuid.uuid4().hex  # in each record this batch writes, and in its progress messages
    tracker = BatchProgress(len(items), bar=progress is True, callback=progress if callable(progress) else None,
                            batch=batch)

    def record(index: int, row: dict) -> None:
        rows[index] = row
        tracker.image(row)
        if on_row is not None:
            on_row(row)

    todo = []
    for index, item in enumerate(items):
        row = None if force or item.problem else done_row(item, task, options)
        if row is not None:
            record(index, row)
        else:
            todo.append((index, item))
    try:
        if todo:
            if client is None and workers == 0 and not (scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")):
                _run_here(todo, task, options, force, batch, record, cancel, tracker)
            else:
                _run_on_dask(todo, task, options, force, batch, record, cancel, client, scheduler, workers, tracker)
    except KeyboardInterrupt:
        for index, item in todo:
            if rows[index] is None:
                rows[index] = empty_row(item, "interrupted")
        raise
    finally:
        tracker.close()
        finished = [row or empty_row(items[i], "cancelled", "not started") for i, row in enumerate(rows)]
        remove_partials(out)
        write_reports(finished, out, title=f"napari-dip batch: {task}")
    return finished


def _run_here(todo, task, options, force, batch, record, cancel, tracker) -> None:
    channel = LocalChannel(tracker.fit, cancel)
    for index, item in todo:
        if cancel is not None and cancel.is_set():
            return
        record(index, restore_one(item, task, options, force, batch, channel))


def _run_on_dask(todo, task, options, force, batch, record, cancel, client, scheduler, workers, tracker) -> None:
    from distributed import Event, wait

    with ExitStack() as stack:
        if client is None:
            client = stack.enter_context(_client(scheduler, workers, options.get("device")))
        # The fits' messages arrive in the client's event loop; they are handed to this
        # thread, which shows them (and calls the caller's callback) between waits.
        messages: queue.SimpleQueue = queue.SimpleQueue()
        client.subscribe_topic(TOPIC, lambda event: messages.put(event[1]))
        stack.callback(_quietly, client.unsubscribe_topic, TOPIC)
        stop = Event(cancel_event_name(batch), client=client)

        def show_progress() -> None:
            while True:
                try:
                    tracker.fit(messages.get_nowait())
                except queue.Empty:
                    return

        channel = DaskChannel(batch)
        futures = {
            client.submit(restore_one, item, task, options, force, batch, channel, pure=False,
                          key=f"napari-dip-{item.input.name}-"
                          f"{os.urandom(4).hex()}"): (index, item)
            for index, item in todo
        }
        pending = set(futures)
        cancelled_at = None
        try:
            while pending:
                if cancelled_at is None and cancel is not None and cancel.is_set():
                    stop.set()  # fits in work stop at their next snapshot; tasks not started, when they start
                    cancelled_at = time.monotonic()
                if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_SECONDS:
                    client.cancel(list(pending))  # the event stays set for the fits still running
                    return
                try:
                    finished, pending = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    finished = ()
                show_progress()
                for future in finished:
                    index, item = futures[future]
                    record(index, _row_of(future, item))
            _quietly(stop.clear)  # no task of the batch is left: the scheduler forgets the event
        except BaseException:
            # Ctrl-C: a remote cluster's fits in work stop too, not only the tasks not started.
            _quietly(stop.set)
            client.cancel(list(pending))
            raise


def _quietly(call, *args) -> None:
    """Tidying up after a batch: a scheduler that went away must not hide what happened."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001
        pass


def _row_of(future, item: Item) -> dict:
    """The task's row; a task Dask gave up on (its workers kept dying) is a failed row."""
    if future.status == "finished":
        return future.result()
    error = future.exception() if future.status == "error" else None
    reason = f"{type(error).__name__}: {error}" if error is not None else f"task {future.status}"
    return empty_row(item, "failed", reason.splitlines()[0])


@contextmanager
def _client(scheduler: str | None, workers: int | None, device: str | None = "auto"):
    """A client of the named scheduler, or of a new local cluster on the loopback interface
    (one worker per GPU with dask-cuda, else one per core: :mod:`.cluster`), closed again
    afterwards."""
    from distributed import Client

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address) as client:
            yield client
        return
    from .cluster import ignore_ctrl_c_in_workers, plan_local_cluster, start_local_cluster

    with start_local_cluster(plan_local_cluster(device, workers)) as cluster, Client(cluster) as client:
        ignore_ctrl_c_in_workers(client)
        yield client
