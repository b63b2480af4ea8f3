"""The run controller: Run/Pause/Stop, the napari thread worker, the progress bar, the
status line (iteration, speed, ETA, loss, PSNR) and the notifications.

Data flow of one run (all on the main thread except the worker's generator):

1. :meth:`RunController.start` gets a :class:`~.plan.Plan`, opens a napari ``progress``
   bar and starts a generator worker running :func:`.worker.fit`.
2. Each ``(plane, snapshot)`` the worker yields comes back through its ``yielded`` signal
   to :meth:`RunController._on_yielded`: the :class:`~.output.OutputLayer` writes it,
   and the progress bar, status line and loss plot follow. Snapshots are queued and handled
   one at a time, because refreshing a layer can process Qt events and deliver the next one
   re-entrantly; the end comes in-band, because Qt does not order the worker's
   ``finished`` signal after its last ``yielded``.
3. :meth:`RunController._finish` writes ``metadata["napari_dip"]``, closes the bar and
   re-enables Run, once per run.

Messages: a notification (toast) says in a few words what happened; the details go to
the status line, which always shows the latest state, an error included. The engine's
warnings (an inpainting mask that looks inverted) get one short notification per run and
stay in the status line to the end; they and the constant planes of a stack copied through
are recorded in the output's metadata.
"""

from __future__ import annotations

import time

from magicgui.widgets import Container, Label, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

from ..errors import ConstantImageError
from . import layers as geo
from .follow import PlaneFollower
from .output import Outputs, find_layer, output_key
from .plan import Plan
from .run import Run, status_line
from .worker import EngineWarning, fit, is_copied

#: Queued after the snapshots when the worker thread ends (see ``_on_yielded``).
_WORKER_FINISHED = object()
#: Notifications longer than this are cut at a word; the status line has the whole text.
TOAST_LENGTH = 72
#: The same for a warning's first clause, which says what looks wrong.
WARNING_LENGTH = 90


def short_message(text: str, limit: int = TOAST_LENGTH) -> str:
    """``text`` cut at a word to at most ``limit`` characters, with an ellipsis.

    >>> short_message("mask 'holes' has shape (20, 20); image 'photo' needs (32, 32)", 40)
    "mask 'holes' has shape (20, 20); image…"
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


class RunControls(Container):
    """Run, Pause/Resume and Stop, and the word-wrapped status line."""

    def __init__(self):
        self.run_button = PushButton(text="Run", tooltip="Start the fit; the output layer appears within seconds")
        self.pause_button = PushButton(text="Pause", tooltip="Pause or resume the fit")
        self.stop_button = PushButton(text="Stop", tooltip="Stop; the output keeps the latest result")
        buttons = Container(widgets=[self.run_button, self.pause_button, self.stop_button], layout="horizontal",
                            labels=False)
        buttons.native.layout().setContentsMargins(0, 0, 0, 0)
        self.status = Label(value="Ready")
        # magicgui's Label is Fixed x Fixed: a wrapped label would keep the width of its own
        # size hint, wider than the dock for a long message and narrower in a wide one, where
        # the layout leaves it only the lines the dock's width needs and the first one is cut
        # under the buttons. Ignored: as wide as the dock, height for that width.
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        policy.setHeightForWidth(True)
        self.status.native.setSizePolicy(policy)
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[buttons, self.status], labels=False)
        self.native.layout().setContentsMargins(0, 0, 0, 0)
        self.set_running(False)

    def set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.pause_button.enabled = running
        self.stop_button.enabled = running
        if not running:
            self.pause_button.text = "Pause"


class RunController:
    """Runs a plan in a worker and reports on it; one run at a time."""

    def __init__(self, viewer, controls: RunControls, loss_plot, title: str):
        self.viewer = viewer
        self.controls = controls
        self.loss_plot = loss_plot
        self.title = title  # "Denoise", for messages
        self.run: Run | None = None
        #: PSNR (dB) of the latest update against the reference layer, if one is chosen.
        self.last_psnr: float | None = None
        #: The output layer each (input, task, factor) got last: what "replace" reuses.
        self.outputs: dict = {}
        #: The same for the trust layers: ``(output key, kind)`` -> unique_id.
        self.trust_layers: dict = {}
        self.clock = time.perf_counter
        self._pending: list = []
        self._handling = False

    # -- messages

    def set_status(self, text: str) -> None:
        self.controls.status.value = text
        self.controls.status.tooltip = text

    def report_error(self, text: str, prefix: str = "Cannot run", notify: bool = True) -> None:
        """The whole message in the status line, a short one as a notification."""
        self.set_status(f"{prefix}: {text}")
        if notify:
            show_error(f"napari-dip {self.title}: {short_message(text)}")

    # -- starting

    def start(self, plan: Plan) -> None:
        if self.run is not None:
            return

        def previous_of(source):
            key = output_key(plan, source)
            if plan.choices.replace and key in self.outputs:
                return find_layer(self.viewer, self.outputs[key])
            return None

        output = Outputs.for_plan(self.viewer, plan, previous_of)
        run = Run(plan=plan, output=output)
        if plan.trust:
            from .trust import TrustMaps

            run.trust = TrustMaps(plan)
        output.set_on_removed(lambda: self._on_output_removed(run))
        if plan.stack and len(plan.planes) > 1:
            run.follower = PlaneFollower(self.viewer, plan.input_layer, len(plan.planes[0]), plan.order)
        run.pbar = progress(total=run.progress_total, desc=f"DIP {plan.task}: {plan.input_name}")
        worker = create_worker(fit, *plan.fit_args, plan.fit_kwargs, _start_thread=False)
        run.worker = worker
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        worker.errored.connect(lambda error: self._on_errored(run, error))
        worker.paused.connect(self._on_paused)
        worker.resumed.connect(self._on_resumed)
        # When the viewer (and the widget) goes away mid-run, stop the worker without
        # touching the deleted widget: ``abandon`` belongs to the plain Python run object.
        self.controls.native.destroyed.connect(run.abandon)
        self.run = run
        self.loss_plot.clear()
        notes = "".join(f" · {note}" for note in [*plan.notes, plan.memory] if note)
        self.set_status(f"Starting {plan.task} of {plan.input_name!r} on {plan.choices.device}...{notes}")
        self.controls.set_running(True)
        run.meter.start(self.clock())
        worker.start()

    # -- while it runs (main thread, through the worker's signals)

    def _on_yielded(self, item) -> None:
        self._pending.append(item)
        if self._handling:
            return
        self._handling = True
        try:
            while self._pending:
                item = self._pending.pop(0)
                if item is _WORKER_FINISHED:
                    if self.run is not None:
                        self._finish(self.run)
                else:
                    self._handle(item)
        finally:
            self._handling = False

    def _handle(self, item) -> None:
        run = self.run
        if run is None or run.closed:
            return
        k, snapshot = item
        if snapshot is None:  # the end marker: every plane is done
            self._finish(run)
            return
        if isinstance(snapshot, BaseException):
            run.error = str(snapshot)
            if isinstance(snapshot, ConstantImageError) and len(run.plan.planes) > 1:
                run.error = f"every plane of {run.plan.input_name!r} is constant: there is nothing to restore"
            run.stop_reason = "error"
            self._finish(run)
            return
        if isinstance(snapshot, EngineWarning):
            message = snapshot.message
            if run.note_warning(k, message):
                # What is wrong, without the hint (the status line has it all), and whole:
                # a warning's point ("probably inverted") tends to come last.
                show_warning(f"napari-dip {self.title}: {short_message(message.split('; ')[0], WARNING_LENGTH)}")
            return
        if run.output.removed or run.stop_reason == "output layer removed":
            return
        if is_copied(snapshot):
            self._copy_through(run, k, snapshot)
            return
        new_plane = run.note_snapshot(k, snapshot)
        if new_plane:
            self.loss_plot.clear()
            if run.follower is not None:
                run.follower.show(run.plan.planes[k])
        made = run.output.layer is not None
        image = run.output.write(k, snapshot, run.metadata("running"))
        if snapshot.done and run.trust is not None and image is not None:
            run.trust.note(k, snapshot)
        if not made:
            for part in run.output.parts:
                if part.layer is not None:
                    self.outputs[output_key(run.plan, part.source)] = part.layer.unique_id
        delta = run.count_progress(snapshot)
        if run.pbar is not None:
            run.pbar.update(delta)
        self.loss_plot.add(snapshot.iteration, snapshot.loss)
        rate = run.meter.update(run.done_iterations, self.clock())
        if run.plan.reference is not None and image is not None:
            run.measure_psnr(k, image, done=snapshot.done)
            self.last_psnr = run.last_psnr
        self.set_status(status_line(run, snapshot, k, rate))

    def _copy_through(self, run: Run, k: int, snapshot) -> None:
        """A plane of a stack the API copied through (constant, or no holes to fill):
        into the output unchanged, and on to the next."""
        delta = run.note_copied_plane(k, snapshot.stop_reason)
        run.output.copy_through(k, snapshot.average)
        if run.pbar is not None:
            run.pbar.update(delta)
        self.loss_plot.clear()
        index = geo.planes_text([run.plan.planes[k]])
        what = "is constant" if snapshot.stop_reason == "constant" else "has no holes"
        parts = [f"plane {index} {what}: copied through unchanged", *run.remarks(constant_planes=False)]
        self.set_status(" · ".join(parts))

    def _on_errored(self, run: Run, error: BaseException) -> None:
        """A bug in the worker (napari shows its traceback): say so instead of "Finished"."""
        if self.run is run and not run.closed:
            run.internal_error = True
            self._on_yielded((run.last_plane, RuntimeError(f"internal error: {type(error).__name__}: {error}")))

    def _on_output_removed(self, run: Run) -> None:
        """The user deleted the layer being written: stop, and say so once."""
        if run.closed or self.run is not run or run.stop_reason is not None:
            return
        run.stop_reason = "output layer removed"
        run.worker.quit()
        self.set_status("Stopped: the output layer was removed")
        # Closing the viewer also removes every layer, just before the widget goes:
        # notify once this event is over, unless that is what happened.
        QTimer.singleShot(0, lambda: self._notify_removed(run))

    def _notify_removed(self, run: Run) -> None:
        try:
            self.controls.native.objectName()
        except RuntimeError:  # deleted with the viewer
            return
        if not run.closed and len(self.viewer.layers) > 0:
            show_error(f"napari-dip {self.title}: output layer removed, fit stopped")

    def _on_paused(self) -> None:
        run = self.run
        if run is not None and not run.closed:
            run.meter.pause(self.clock())
            self.controls.pause_button.text = "Resume"
            self.set_status(self.controls.status.value + " · paused")

    def _on_resumed(self) -> None:
        run = self.run
        if run is not None and not run.closed:
            run.meter.resume(self.clock())
            self.controls.pause_button.text = "Pause"

    def toggle_pause(self) -> None:
        run = self.run
        if run is None or run.worker is None:
            return
        if run.worker.is_paused:
            run.worker.resume()
        else:
            run.worker.pause()

    def stop(self) -> None:
        """Stop the fit; the output layer keeps the latest result."""
        run = self.run
        if run is None or run.worker is None:
            return
        if run.stop_reason is None:
            run.stop_reason = "user"
        self.set_status(self.controls.status.value + " · stopping")
        run.worker.quit()

    def _on_finished(self) -> None:
        # Reached without the end marker when the run was stopped or the viewer closed.
        run = self.run
        if run is not None and run.closed:
            self._finish(run)  # the widget is gone: only close the progress bar
        elif run is not None:
            self._on_yielded(_WORKER_FINISHED)

    # -- the end

    def _finish(self, run: Run) -> None:
        """Close the progress bar, write the metadata and re-enable Run (once per run)."""
        if self.run is not run:
            return
        self.run = None
        if run.pbar is not None:
            run.pbar.close()
            run.pbar = None
        if run.closed:  # the widget is gone; only the run object is left
            return
        try:
            self.controls.native.destroyed.disconnect(run.abandon)
        except (TypeError, RuntimeError):
            pass
        self.controls.set_running(False)
        made = run.output.exists()
        # Constant planes copied through are news only in an output that exists.
        remarks = "".join(f" · {remark}" for remark in run.remarks(constant_planes=made))
        if not made and not run.error and not run.stop_reason and len(run.constant_planes) == len(run.plan.planes):
            run.error = f"every plane of {run.plan.input_name!r} is constant: there is nothing to restore"
        if run.error:
            self.report_error(run.error, prefix="Stopped by an error" if made else "Failed",
                              notify=not run.internal_error)
            self.set_status(self.controls.status.value + remarks)
        if not run.output.exists():
            run.output.close()
            if run.stop_reason == "output layer removed":
                self.set_status("Stopped: the output layer was removed")
            elif not run.error:
                self.set_status("Stopped before the first update" + remarks)
            return
        reason = run.stop_reason or run.engine_stop_reason or "budget"
        run.output.finish(run.metadata(reason))
        trust_names = ""
        if run.trust is not None:
            made = run.trust.add_layers(self.viewer, run.output, run.metadata(reason), self.trust_layers)
            trust_names = "".join(f", {layer.name}" for layer in made)
        if run.error:
            return
        text = {
            "budget": "Finished",
            "user": "Stopped; the output keeps the latest result",
        }.get(reason, f"Finished ({reason})")
        psnr_text = f" · PSNR {run.last_psnr:.2f} dB" if run.last_psnr is not None else ""
        missing = run.planes_not_reached()
        if missing:
            remarks += f" · {len(missing)} of {len(run.plan.planes)} planes not reached: left at zero"
        self.set_status(f"{text} · {run.done_iterations} iterations{psnr_text} · {run.output.names()}{trust_names}"
                        f"{remarks}")
