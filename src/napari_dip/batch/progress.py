"""A batch's fits and its client talking while the fits run: iteration progress out, a
cancel request in.

On Dask, a fit publishes its progress with the worker's ``log_event`` under the topic
:data:`TOPIC` and the client receives it through ``Client.subscribe_topic``; a cancel is a
``distributed.Event`` named after the batch that the fits look at. Both go through the
scheduler, so they work the same on a LocalCluster and on a remote cluster. In this
process (``workers=0``) the same fit-side code calls the client's handler directly and
looks at a ``threading.Event``.

A fit says where it is at each snapshot of the engine (every ``--progress-every``
iterations), at most every :data:`MIN_INTERVAL` seconds (its last snapshot always), and
asks whether it is cancelled at most every :data:`CANCEL_CHECK_INTERVAL` seconds; a
cancelled fit stops at that snapshot (:class:`FitCancelled`), before anything is written.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

#: The Dask event-log topic of every napari-dip batch (messages name their batch).
TOPIC = "napari-dip-progress"
#: Seconds between two progress messages of one fit (its first and last are always sent).
MIN_INTERVAL = 0.25
#: Seconds between two looks at the cancel request (one scheduler round trip on Dask).
CANCEL_CHECK_INTERVAL = 0.5


class FitCancelled(Exception):
    """The batch was cancelled while this fit ran; ``iteration`` is where it stopped."""

    def __init__(self, iteration: int):
        super().__init__(f"cancelled at iteration {iteration}")
        self.iteration = iteration


def cancel_event_name(batch: str) -> str:
    return f"napari-dip-cancel-{batch}"


class DaskChannel:
    """The fit's side on a Dask worker. Only the batch id travels to the worker; the
    ``distributed.Event`` is made there, on first use."""

    def __init__(self, batch: str):
        self.batch = batch
        self._event = None

    def __reduce__(self):
        return (DaskChannel, (self.batch,))

    def publish(self, message: dict) -> None:
        from distributed import get_worker

        get_worker().log_event(TOPIC, message)

    def cancelled(self) -> bool:
        if self._event is None:
            from distributed import Event

            self._event = Event(cancel_event_name(self.batch))
        return bool(self._event.is_set())

    def where(self) -> str:
        from distributed import get_worker

        return get_worker().address


class LocalChannel:
    """The fit's side in the client's own process: ``publish`` is the client's handler."""

    def __init__(self, publish, cancel: threading.Event | None):
        self.publish = publish
        self._cancel = cancel

    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def where(self) -> str:
        return "here"


class FitWatch:
    """Wraps the snapshot stream of one input's fit (as :func:`napari_dip.cli.restore_file`
    consumes it: snapshots, or ``(index, snapshot)`` pairs of a stack's planes): publishes
    throttled progress messages and raises :class:`FitCancelled` when the batch is cancelled.

    A message: ``batch``, ``input`` (its path), ``worker``, ``part`` (1, 2, ... : the plane,
    volume or tile in work; 1 for a single fit), ``iteration`` and ``budget`` of that part,
    ``expected_stop`` (where automatic stopping is expected to end it,
    :func:`napari_dip.engine.stopping.expected_stop`; ``None`` without), ``iterations_done``
    (all parts' iterations so far: it never goes back), ``loss``, ``seconds`` since the worker took the input (reading it and building the
    network included), ``done`` (the whole input's fit ended).
    """

    def __init__(self, channel, batch: str, input_path: str):
        self.channel, self.batch, self.input = channel, batch, input_path
        self.started = time.perf_counter()
        self.last_sent = self.last_checked = -float("inf")
        self.part_key = None
        self.part = 0
        self.finished_parts = 0  # iterations of the parts before the one in work

    def check_cancel(self, iteration: int = 0, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last_checked >= CANCEL_CHECK_INTERVAL:
            self.last_checked = now
            if self.channel.cancelled():
                raise FitCancelled(iteration)

    def __call__(self, stream):
        last = None
        for item in stream:
            index, snap = item if isinstance(item, tuple) else (None, item)
            tile = getattr(snap, "tile", None)
            blended = tile is not None and snap.done  # a tiled fit's result: all tiles' counts
            if not blended:
                key = (index, tile)
                if key != self.part_key:
                    if self.part_key is not None and last is not None:
                        self.finished_parts += last.iteration
                    self.part_key, self.part = key, self.part + 1
                last = snap
                self._publish(snap, final=snap.done)
            self.check_cancel(snap.iteration)
            yield item

    def finish(self) -> None:
        """Say that the input's whole fit is over (sent once, after the last part)."""
        self.channel.publish({**self._base(), "done": True})

    def _base(self, now: float | None = None) -> dict:
        """The fields of every message; ``now`` is the sender's clock reading, so that a
        message's ``seconds`` is the time its throttle measured."""
        now = time.perf_counter() if now is None else now
        return {"batch": self.batch, "input": self.input, "worker": self.channel.where(),
                "seconds": round(now - self.started, 3)}

    def _publish(self, snap, final: bool) -> None:
        now = time.perf_counter()
        if not final and now - self.last_sent < MIN_INTERVAL:
            return
        self.last_sent = now
        loss = float(snap.loss)
        self.channel.publish({
            **self._base(now), "done": False, "part": self.part, "iteration": int(snap.iteration),
            "budget": int(snap.iterations),
            "expected_stop": None if snap.expected_stop is None else int(snap.expected_stop),
            "iterations_done": self.finished_parts + int(snap.iteration),
            "loss": loss if loss == loss else None,  # NaN is not JSON
        })


def fit_end(message: dict) -> tuple[int, bool]:
    """Where a fit's progress counts to: ``(end, estimated)``, the expected stop of
    automatic stopping (``estimated``) or the budget.

    >>> fit_end({"iteration": 120, "budget": 3000, "expected_stop": 480})
    (480, True)
    >>> fit_end({"iteration": 120, "budget": 500, "expected_stop": None})
    (500, False)
    """
    budget, expected = message["budget"], message.get("expected_stop")
    if expected is None or expected >= budget:
        return budget, False
    return max(message["iteration"], expected), True


def describe_fit(message: dict) -> str:
    """One image in work for a person: ``cells.tif 120/~480`` (``~``: the stop estimate),
    ``stack.tif part 3 40/500``.

    >>> describe_fit({"input": "/d/a.tif", "part": 1, "iteration": 120, "budget": 3000, "expected_stop": 480})
    'a.tif 120/~480'
    """
    end, estimated = fit_end(message)
    part = f" part {message['part']}" if message.get("part", 1) > 1 else ""
    return f"{Path(message['input']).name}{part} {message['iteration']}/{'~' if estimated else ''}{end}"


class BatchProgress:
    """The client's view of a batch: images finished out of all, and each image in work
    with its latest fit message. Feeds a callback (``restore_files(progress=callback)``)
    with every message, completed by ``images_done`` and ``images_total``, and/or draws a
    tqdm bar over images whose postfix shows the fits in work.

    Messages the callback gets: ``kind="fit"`` (a fit's progress, see :class:`FitWatch`)
    and ``kind="image"`` (an input finished: its report row's ``input`` and ``status``).
    """

    def __init__(self, total: int, bar: bool, callback=None, batch: str | None = None):
        self.total, self.done, self.batch, self.callback = total, 0, batch, callback
        self.counts: dict[str, int] = {}
        self.in_work: dict[str, dict] = {}
        self.tqdm = None
        self.last_drawn = 0.0
        if bar and total:
            from tqdm import tqdm

            # Without a terminal (CI logs) every redraw is a line of its own: far fewer of them.
            interactive = getattr(sys.stderr, "isatty", lambda: False)()
            self.tqdm = tqdm(total=total, unit="image", dynamic_ncols=True, file=sys.stderr,
                             mininterval=0.5 if interactive else 10.0)

    def fit(self, message: dict) -> None:
        """A fit's message (from any thread that calls it; the client calls it in its own)."""
        if self.batch is not None and message.get("batch") != self.batch:
            return  # another batch on the same scheduler
        if message.get("done"):
            self.in_work.pop(message["input"], None)
        else:
            self.in_work[message["input"]] = message
        self._tell({**message, "kind": "fit"})
        self._draw(force=False)

    def image(self, row: dict) -> None:
        self.done += 1
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        self.in_work.pop(row["input"], None)
        self._tell({"kind": "image", "input": row["input"], "status": row["status"]})
        if self.tqdm is not None:
            self.tqdm.update(1)
        self._draw(force=True)

    def _tell(self, message: dict) -> None:
        if self.callback is not None:
            self.callback({**message, "images_done": self.done, "images_total": self.total})

    def _draw(self, force: bool) -> None:
        if self.tqdm is None:
            return
        now = time.monotonic()
        if not force and now - self.last_drawn < self.tqdm.mininterval:
            return
        self.last_drawn = now
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        working = "; ".join(describe_fit(m) for m in self.in_work.values() if "iteration" in m)
        self.tqdm.set_postfix_str("; ".join(part for part in (counts, working) if part), refresh=False)
        self.tqdm.refresh()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
