"""The Batch dock widget: one task's settings applied to the selected Image layers (results
as new layers) or to a folder (results as files, with :mod:`napari_dip.batch`'s records
and report), with overall progress (images done, and each image in work with its
iteration and where it is expected to stop) and Cancel (fits in work stop at their next
snapshot, write nothing and are reported cancelled).

Thin on purpose: the settings are a task widget's form (:class:`.form.TaskForm`: preset,
device, noise model, factor or mask, and the advanced settings), less what concerns one
layer; layers go through the numpy API one after another in a worker thread, folders
through :func:`napari_dip.batch.restore_files` (on Dask, or in napari's process with 0
workers). torch is imported when the form lists the devices, not when napari lists the plugin.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.qt.threading import create_worker

from . import layers as geo
from . import prefs
from .form import TaskForm
from .scrolling import guard_wheel, scroll_column

LAYERS, FOLDER = "selected image layers", "folder"
TASKS = ["denoise", "super-resolve", "inpaint"]
#: The layers' fits report their progress (and look at Cancel) every this many iterations,
#: as ``napari-dip batch`` does by default (``--progress-every``).
SNAPSHOT_EVERY = 10
#: Seconds between two progress messages of a layer's fit.
MESSAGE_SECONDS = 0.25
#: What a task widget's form has that concerns one layer or how its fit is shown, not a batch.
ONE_LAYER_ONLY = ("image", "reference", "planes", "warm_start", "volumetric", "together", "replace", "show",
                  "keep_snapshots", "uncertainty_layer", "residual_layer")


class BatchWidget(Container):
    """Restore many images with the same settings."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.task = ComboBox(label="Task", choices=TASKS, value="denoise")
        self.source = ComboBox(label="Apply to", choices=[LAYERS, FOLDER], value=LAYERS)
        self.forms: dict[str, TaskForm] = {}  # made when their task is first chosen
        self.settings_box = Container(labels=False)
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
            self.task, self.source, self.settings_box, self.folder, self.out, self.mask_pattern, self.workers,
            self.run_button, self.cancel_button,
            self.progress, self.status,
        ])
        # A short window scrolls the column to Run instead of cutting it off.
        self._scroll_area = scroll_column(super().native)
        self.worker = None
        self.cancel_event = threading.Event()
        self.rows: list[dict] = []
        self.in_work: dict[str, dict] = {}  # input -> its fit's latest progress message
        self.run_options: dict = {}  # the settings of the run under way
        self.run_task, self.run_source, self.run_out = self.task.value, self.source.value, None
        self.sources: dict[str, dict] = {}  # input layer name -> what its output takes from it
        self.task.changed.connect(self._show_options)
        self.source.changed.connect(self._show_options)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self._show_options()

    @property
    def form(self) -> TaskForm:
        """The chosen task's form (the settings of that task's widget)."""
        task = self.task.value
        if task not in self.forms:
            # No warm-up: a folder's fits run in Dask's worker processes, where a context in
            # napari's would only hold memory; a batch of layers pays the start-up once.
            form = TaskForm(self.viewer, task, prefs.plugin_settings(), warm_up=False)
            for name in ONE_LAYER_ONLY:
                if getattr(form, name, None) is not None:
                    getattr(form, name).visible = False
            form.update_every.label = "Report every"
            form.update_every.tooltip = "Iterations between progress reports (and looks at Cancel)"
            form.update_every.value = SNAPSHOT_EVERY
            self.forms[task] = form
            self.settings_box.append(Container(widgets=[form.basic, form.device_info, form.advanced], labels=False))
            guard_wheel(self.settings_box.native)  # the new form's boxes too
        return self.forms[task]

    @property
    def native(self):
        """The scroll area around the column, which is what napari docks (the column
        itself until the area is made)."""
        area = self.__dict__.get("_scroll_area")
        return area if area is not None else super().native

    scroll_area = native

    # The form's boxes the tests and scripts set most.
    preset = property(lambda self: self.form.preset)
    iterations = property(lambda self: self.form.iterations)
    seed = property(lambda self: self.form.seed)

    def reset_choices(self, *args) -> None:
        """Called by napari when layers are added, removed or renamed."""
        super().reset_choices(*args)
        for form in self.forms.values():
            form.reset_choices()

    def _show_options(self, *_) -> None:
        folder = self.source.value == FOLDER
        shown = self.form
        for form, box in zip(self.forms.values(), self.settings_box):
            box.visible = form is shown
        if shown.mask is not None:
            shown.mask.visible = not folder  # a folder's masks are found by name
        self.mask_pattern.visible = self.task.value == "inpaint" and folder
        for widget in (self.folder, self.out, self.workers):
            widget.visible = folder

    def settings(self) -> dict:
        """The fit options the form holds, by the command line's names."""
        chosen = self.form.choices()
        options = {"preset": chosen.preset, "device": chosen.device, "iterations": chosen.iterations,
                   "learning_rate": chosen.learning_rate, "channels": chosen.channels, "seed": chosen.seed,
                   "progress_every": chosen.snapshot_every}
        if chosen.stopping is not None:
            options["stop"] = chosen.stopping
        if chosen.reg_noise_std is not None:
            options["reg_noise_std"] = chosen.reg_noise_std
        if getattr(chosen, "runs", 1) > 1:
            options["runs"] = chosen.runs
        if chosen.task == "denoise":
            options["noise"] = chosen.noise
            if chosen.recorrupt is not None:
                options["recorrupt"] = chosen.recorrupt  # the form's Network input, as --(no-)recorrupt
        if chosen.task == "super-resolve":
            options["factor"] = chosen.factor
        if chosen.task == "inpaint":
            options.update(mask_known=chosen.mask_marks_known, raw_output=chosen.raw_output)
        return options

    # -- running

    def start(self, *_) -> None:
        if self.worker is not None:
            return
        self.cancel_event.clear()
        self.rows = []
        self.in_work = {}
        # What this run does, as chosen when Run was pressed (the boxes may change meanwhile).
        self.run_task, self.run_source, self.run_out = self.task.value, self.source.value, self.out.value
        if self.run_source == LAYERS:
            selected = self.viewer.layers.selection  # a set: keep the layer list's order
            images = [layer for layer in self.viewer.layers if layer in selected and isinstance(layer, napari.layers.Image)]
            if not images:
                self.status.value = "select the Image layers to restore"
                return
            mask = self.form.mask.value if self.form.mask is not None else None
            if self.task.value == "inpaint" and mask is None:
                self.status.value = "inpainting needs a Labels layer of the holes"
                return
            jobs = [(layer.name, layer.data, None if mask is None else mask.data, *_axes_of(layer))
                    for layer in images]
            self.run_options = self.settings()
            # Read in this (the GUI) thread, when Run is pressed: where each output goes.
            self.sources = {layer.name: _look_of(layer) for layer in images}
            self.worker = create_worker(_restore_layers, jobs, self.run_task, self.run_options, self.cancel_event,
                                        _start_thread=False)
            self.progress.max = len(jobs)
        else:
            folder, out = Path(self.folder.value), Path(self.out.value)
            if str(self.folder.value) in ("", ".") or str(self.out.value) in ("", "."):
                self.status.value = "choose an input folder and an output folder"
                return
            pattern = self.mask_pattern.value if self.run_task == "inpaint" else None
            self.worker = create_worker(_restore_folder, folder, out, self.run_task, pattern, self.workers.value,
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
        if kind == "report":
            self.rows = list(message[1])  # the summary then counts what report.csv says
            self.in_work.clear()
            return
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
            _, name, data, settings, finished = message
            self.viewer.add_layer(self._output_layer(name, data, settings, finished))
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

    def _output_layer(self, name: str, data, settings: dict, finished: dict):
        """The restored image as a layer over its input (as a task widget's output: the
        input's transform, units and look, named and recorded the same way)."""
        from napari.layers import Image

        from .. import __version__

        look = self.sources[name]
        options = self.run_options
        task, fit = self.run_task, settings.get("fit") or {}
        factor = options.get("factor") if task == "super-resolve" else None
        record = geo.run_metadata(
            task=task, preset=settings.get("preset", options["preset"]), preset_requested=options["preset"],
            factor=factor, parameters=options, seed=fit.get("seed", options.get("seed")),
            device=settings.get("device", options.get("device")), iterations_run=finished["iterations_run"],
            iterations_planned=finished["iterations_planned"], stop_reason=finished["stop_reason"],
            input_name=name, planes=finished["planes"], version=__version__, engine_settings=settings)
        record["batch"] = True
        geometry = geo.output_geometry(look["geometry"], factor=factor)
        taken = {layer.name for layer in self.viewer.layers}
        out_name = geo.output_name(name, task, factor, preset=geo.preset_label(settings), seed=record["seed"],
                                   taken=taken)
        return Image(data, name=out_name, rgb=look["rgb"], metadata={**look["metadata"], "napari_dip": record},
                     **geometry.as_layer_kwargs(), **look["display"])

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
        where = f"; report in {self.run_out}" if self.run_source == FOLDER else ""
        self.status.value = ("cancelled: " if self.cancel_event.is_set() else "finished: ") + done + where


def _restore_layers(jobs, task, options, cancel):
    """Worker thread: each layer's array through the numpy API, a stack plane by plane
    (warm-started, as the command line does); yields messages."""
    from ..axes import layout_for
    from ..errors import DeviceMemoryError, InputError
    from ..restore import iter_restore_planes

    options = numpy_options(options)
    every = options.pop("snapshot_every", SNAPSHOT_EVERY)
    factor = options.get("factor") if task == "super-resolve" else None

    yield ("total", len(jobs))
    for name, data, mask, axes, problem in jobs:
        if cancel.is_set():
            return
        if problem:
            yield ("error", name, problem)
            continue
        extra = {"mask": mask} if task == "inpaint" else {}
        sent, snap, cancelled = -float("inf"), None, False
        done = []  # each plane's final snapshot
        try:
            layout = layout_for(tuple(data.shape), axes)
            result = layout.new_output(data.dtype, factor)
            stream = iter_restore_planes(task, data, axes=axes, snapshot_every=every, **options, **extra)
            for index, snap in stream:
                if cancel.is_set():
                    stream.close()  # the engine stops here; nothing of this layer is kept
                    cancelled = True
                    break
                if snap.done:
                    layout.put(result, index, snap.average)
                    done.append((index, snap))
                elif time.perf_counter() - sent >= MESSAGE_SECONDS:
                    sent = time.perf_counter()
                    yield ("fit", {"input": name, "part": len(done) + 1, "iteration": snap.iteration,
                                   "budget": snap.iterations, "expected_stop": snap.expected_stop})
        except (InputError, DeviceMemoryError, FloatingPointError) as error:
            yield ("error", name, str(error))
            continue
        if cancelled or not done:
            at = f" at iteration {snap.iteration}" if snap is not None else ""
            yield ("cancelled", name, f"cancelled{at}; nothing kept")
            return
        reasons = sorted({final.stop_reason for _, final in done})
        finished = {"iterations_run": sum(final.iteration for _, final in done),
                    "iterations_planned": sum(final.iterations for _, final in done),
                    "stop_reason": reasons[0] if len(reasons) == 1 else "per plane: " + ", ".join(reasons),
                    "planes": [tuple(index) for index, _ in done]}
        yield ("layer", name, result, done[-1][1].settings, finished)


def _axes_of(layer) -> tuple[str | None, str | None]:
    """The API's ``axes`` for a layer (``None`` for a single image) and, where its planes
    cannot be told apart, why it is not restored here."""
    leading = layer.ndim - 2  # napari leaves an RGB layer's colour axis out of ndim
    if leading <= 0:
        return None, None
    letters = geo.stack_letters(geo.layer_geometry(layer).axis_labels[:leading])
    if letters is None:
        return None, (f"{leading} stack axes (at most one time and one depth axis here); "
                      "restore it with the task's own widget")
    return letters + "YX" + ("C" if layer.rgb else ""), None


def _look_of(layer) -> dict:
    """What an output takes from its input layer (read when Run is pressed): transform and
    axis annotations, display and metadata, as a task widget's output does."""
    rgb = bool(layer.rgb)
    return {"geometry": geo.layer_geometry(layer), "rgb": rgb, "display": geo.input_look(layer, rgb),
            "metadata": geo.input_metadata(layer)}


def numpy_options(options: dict) -> dict:
    """The command line's option names (:meth:`BatchWidget.settings`) as ``iter_restore``'s.

    >>> numpy_options({"stop": "none", "progress_every": 5, "mask_known": True, "raw_output": False, "seed": 1})
    {'seed': 1, 'stopping': 'none', 'snapshot_every': 5, 'mask_marks': 'known', 'keep_known': True}
    """
    renamed = {"stop": "stopping", "progress_every": "snapshot_every"}
    converted = {key: value for key, value in options.items() if key not in (*renamed, "mask_known", "raw_output")}
    converted.update({renamed[key]: options[key] for key in renamed if key in options})
    if "mask_known" in options:
        converted["mask_marks"] = "known" if options["mask_known"] else "holes"
        converted["keep_known"] = not options.get("raw_output", False)
    return converted


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
            report = restore_files([folder], task=task, out=out, mask_pattern=mask_pattern, workers=workers,
                                   progress=progress, cancel=cancel, on_row=lambda row: rows.put(("row", row)),
                                   **options)
            # Every input's row, as the report has them (those never started are only here).
            rows.put(("report", report))
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
