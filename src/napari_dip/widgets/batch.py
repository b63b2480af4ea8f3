"""The Batch dock widget: one task's settings applied to the selected Image layers (results
as new layers) or to a folder (results as files, with :mod:`napari_dip.batch`'s records
and report), with overall progress (images done, and each image in work with its
iteration and where it is expected to stop) and Cancel (fits in work stop at their next
snapshot, write nothing and are reported cancelled).

Thin on purpose: layers go through the numpy API one after another in a worker thread,
folders through :func:`napari_dip.batch.restore_files` (on Dask, or in napari's process
with 0 workers). torch is imported by the worker, not when napari lists the plugin.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.qt.threading import create_worker

LAYERS, FOLDER = "selected image layers", "folder"
TASKS = ["denoise", "super-resolve", "inpaint"]
#: The layers' fits report their progress (and look at Cancel) every this many iterations,
#: as ``napari-dip batch`` does by default (``--progress-every``).
SNAPSHOT_EVERY = 10
#: Seconds between two progress messages of a layer's fit.
MESSAGE_SECONDS = 0.25


class BatchWidget(Container):
    """Restore many images with the same settings."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.task = ComboBox(label="Task", choices=TASKS, value="denoise")
        self.source = ComboBox(label="Apply to", choices=[LAYERS, FOLDER], value=LAYERS)
        self.preset = ComboBox(label="Preset", choices=["auto", "fast", "paper"], value="auto")
        self.iterations = SpinBox(label="Iterations", min=0, max=100_000, value=0,
                                  tooltip="0: the preset's budget (automatic stopping may end a fit earlier)")
        self.seed = SpinBox(label="Seed", min=0, max=2**31 - 1, value=0)
        self.factor = ComboBox(label="Factor", choices=[2, 3, 4, 8], value=4, visible=False)
        self.mask_layer = ComboBox(label="Mask layer", choices=self._labels_layers, visible=False,
                                   tooltip="Labels layer of the holes (nonzero), one for every image")
        self.folder = FileEdit(label="Input folder", mode="d", visible=False)
        self.out = FileEdit(label="Output folder", mode="d", visible=False)
        self.mask_pattern = LineEdit(label="Mask pattern", value="{stem}_mask.png", visible=False)
        self.workers = SpinBox(label="Workers", min=0, max=256, value=0, visible=False,
                               tooltip="Dask worker processes (one image each); 0: one after another in napari")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self.status = Label(value="")
        super().__init__(widgets=[
            self.task, self.source, self.preset, self.iterations, self.seed, self.factor, self.mask_layer,
            self.folder, self.out, self.mask_pattern, self.workers, self.run_button, self.cancel_button,
            self.progress, self.status,
        ])
        self.worker = None
        self.cancel_event = threading.Event()
        self.rows: list[dict] = []
        self.in_work: dict[str, dict] = {}  # input -> its fit's latest progress message
        self.task.changed.connect(self._show_options)
        self.source.changed.connect(self._show_options)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)

    def _labels_layers(self, _widget=None) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]

    def _show_options(self, *_) -> None:
        folder = self.source.value == FOLDER
        self.factor.visible = self.task.value == "super-resolve"
        self.mask_layer.visible = self.task.value == "inpaint" and not folder
        self.mask_pattern.visible = self.task.value == "inpaint" and folder
        for widget in (self.folder, self.out, self.workers):
            widget.visible = folder

    def settings(self) -> dict:
        """The fit options (the command line's names) the form holds."""
        options = {"preset": self.preset.value, "seed": self.seed.value}
        if self.iterations.value:
            options["iterations"] = self.iterations.value
        if self.task.value == "super-resolve":
            options["factor"] = self.factor.value
        return options

    # -- running

    def start(self, *_) -> None:
        if self.worker is not None:
            return
        self.cancel_event.clear()
        self.rows = []
        self.in_work = {}
        if self.source.value == LAYERS:
            selected = self.viewer.layers.selection  # a set: keep the layer list's order
            images = [layer for layer in self.viewer.layers if layer in selected and isinstance(layer, napari.layers.Image)]
            if not images:
                self.status.value = "select the Image layers to restore"
                return
            mask = self.mask_layer.value
            if self.task.value == "inpaint" and mask is None:
                self.status.value = "inpainting needs a Labels layer of the holes"
                return
            jobs = [(layer.name, layer.data, None if mask is None else mask.data) for layer in images]
            self.worker = create_worker(_restore_layers, jobs, self.task.value, self.settings(), self.cancel_event,
                                        _start_thread=False)
            self.progress.max = len(jobs)
        else:
            folder, out = Path(self.folder.value), Path(self.out.value)
            if str(self.folder.value) in ("", ".") or str(self.out.value) in ("", "."):
                self.status.value = "choose an input folder and an output folder"
                return
            pattern = self.mask_pattern.value if self.task.value == "inpaint" else None
            self.worker = create_worker(_restore_folder, folder, out, self.task.value, pattern, self.workers.value,
                                        self.settings(), self.cancel_event, _start_thread=False)
            self.progress.max = 1
        self.progress.value = 0
        self.status.value = "starting"
        self.worker.yielded.connect(self._on_yielded)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def cancel(self, *_) -> None:
        """Stop: the fits in work stop at their next snapshot (nothing of theirs is kept),
        images not started are left."""
        self.cancel_event.set()
        self.status.value = "cancelling: the fits in work stop at their next snapshot"

    def _on_yielded(self, message) -> None:
        kind = message[0]
        if kind == "fit":
            fit = message[1]
            if fit.get("done"):
                self.in_work.pop(fit["input"], None)
            else:
                self.in_work[fit["input"]] = fit
            if not self.cancel_event.is_set():
                self.status.value = self._working()
            return
        if len(message) > 1:
            self.in_work.pop(message[1]["input"] if kind == "row" else message[1], None)
        if kind == "total":
            self.progress.max = max(1, message[1])
        elif kind == "layer":
            _, name, data, metadata = message
            self.viewer.add_image(data, name=f"{name} ({self.task.value})", metadata={"napari_dip": metadata})
            self.rows.append({"input": name, "status": "done"})
            self.progress.value = min(self.progress.max, self.progress.value + 1)
            self.status.value = f"{name}: done"
        elif kind == "row":
            row = message[1]
            self.rows.append(row)
            self.progress.value = min(self.progress.max, self.progress.value + 1)
            self.status.value = f"{Path(row['input']).name}: {row['status']} {row['error']}".strip()
        elif kind == "error":
            self.rows.append({"input": message[1], "status": "failed", "error": message[2]})
            self.progress.value = min(self.progress.max, self.progress.value + 1)
            self.status.value = f"{message[1]}: {message[2]}"
        elif kind == "cancelled":
            self.rows.append({"input": message[1], "status": "cancelled", "error": message[2]})

    def _working(self) -> str:
        """``2/5 images; a.tif 120/~480`` (``~``: automatic stopping's estimate)."""
        from ..batch.progress import describe_fit

        fits = "; ".join(describe_fit(fit) for fit in self.in_work.values())
        done = f"{self.progress.value}/{self.progress.max} images"
        return f"{done}; {fits}" if fits else done

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        done = ", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing done"
        where = f"; report in {self.out.value}" if self.source.value == FOLDER else ""
        self.status.value = ("cancelled: " if self.cancel_event.is_set() else "finished: ") + done + where


def _restore_layers(jobs, task, options, cancel):
    """Worker thread: each layer's array through the numpy API; yields messages."""
    from ..errors import DeviceMemoryError, InputError
    from ..restore import iter_restore

    yield ("total", len(jobs))
    for name, data, mask in jobs:
        if cancel.is_set():
            return
        extra = {"mask": mask} if task == "inpaint" else {}
        final, sent = None, -float("inf")
        stream = iter_restore(task, data, snapshot_every=SNAPSHOT_EVERY, **options, **extra)
        try:
            for snap in stream:
                if cancel.is_set():
                    stream.close()  # the engine stops here; its result is not kept
                    break
                if snap.done:
                    final = snap
                elif time.perf_counter() - sent >= MESSAGE_SECONDS:
                    sent = time.perf_counter()
                    yield ("fit", {"input": name, "part": 1, "iteration": snap.iteration, "budget": snap.iterations,
                                   "expected_stop": snap.expected_stop})
        except (InputError, DeviceMemoryError, FloatingPointError) as error:
            yield ("error", name, str(error))
            continue
        if final is None:
            yield ("cancelled", name, f"cancelled at iteration {snap.iteration}; nothing kept")
            return
        metadata = {**final.settings, "iterations_run": final.iteration, "stop_reason": final.stop_reason,
                    "source_layer": name}
        yield ("layer", name, final.average, metadata)


def _restore_folder(folder, out, task, mask_pattern, workers, options, cancel):
    """Worker thread: :func:`restore_files` in a thread of its own, its rows passed on as
    they come (the report is written by ``restore_files``)."""
    from ..batch import restore_files
    from ..batch.inputs import plan_items
    from ..errors import InputError

    try:
        total = len(plan_items([folder], out, task, mask_pattern))
    except InputError as error:
        yield ("error", str(folder), str(error))
        return
    yield ("total", total)
    rows: queue.Queue = queue.Queue()
    failure: list = []

    def progress(message: dict) -> None:
        if message["kind"] == "fit":
            rows.put(("fit", message))

    def run():
        try:
            restore_files([folder], task=task, out=out, mask_pattern=mask_pattern, workers=workers,
                          progress=progress, cancel=cancel, on_row=lambda row: rows.put(("row", row)), **options)
        except Exception as error:  # noqa: BLE001 - shown in the status line
            failure.append(error)
        finally:
            rows.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while (message := rows.get()) is not None:
        yield message
    thread.join()
    if failure:
        yield ("error", str(folder), str(failure[0]))
