"""Dock widgets: pick layers, run a deep-image-prior fit in a thread, stream it into a layer.

The widget is thin: layers -> numpy arrays (main thread) -> :func:`napari_dip.restore.iter_restore`
in a napari generator worker -> snapshots -> one output layer (main thread, via the
worker's ``yielded`` signal). The worker sees only numpy arrays and plain values, never a
layer or a Qt object, so nothing touches the viewer off the main thread.

torch is imported on first use (creating a widget asks the engine for devices and preset
defaults), never when napari imports this module to list the plugin's contributions.
"""

import math
import time
from dataclasses import dataclass, field

import napari
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from .widgets import layers as _layers

PLUGIN_NAME = "napari-dip"
PLANES_IN_VIEW = "plane in view"
PLANES_ALL = "all planes"
SHOW_AVERAGE = "running average"
SHOW_OUTPUT = "current output"
#: The input-jitter box's "auto" value sits one 4-decimal step below zero (a valid jitter).
AUTO_STEP = 1e-4

#: Labels and engine values of the automatic stopping rules (``iter_restore(stopping=...)``).
STOPPING_CHOICES = [
    ("automatic (task default)", None),
    ("ES-WMV (output variance)", "wmv"),
    ("held-out pixels", "validation"),
    ("off: run every iteration", "none"),
]
#: Queued after the snapshots when the worker thread ends (see ``_on_yielded``).
_WORKER_FINISHED = object()
#: Refuse to preallocate a kept-snapshots stack larger than this (bytes).
MAX_STACK_BYTES = 2 * 2**30


# -- helpers that run on the main thread ---------------------------------------------------


def _plugin_defaults():
    """The plugin's remembered settings (``configurations`` in napari.yaml), or ``None``.

    ``None`` when napari's settings are unavailable, e.g. the plugin is used without being
    discovered by npe2; the widget then uses built-in defaults and remembers nothing.
    """
    try:
        from napari.settings import get_plugin_settings

        return get_plugin_settings(PLUGIN_NAME).defaults
    except Exception:  # noqa: BLE001 - any failure means "no remembered settings"
        return None


def _same_layer(a, b) -> bool:
    # Identity through napari's PublicOnlyProxy wrappers: each access makes a new proxy.
    return a is not None and b is not None and a.unique_id == b.unique_id


def _in_viewer(viewer, layer) -> bool:
    return any(_same_layer(layer, other) for other in viewer.layers)


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers of one type, kept in sync with the layer list.

    Follows layers being added, removed, reordered and renamed; keeps the selected layer
    selected across those changes (by identity, not by name).
    """

    def __init__(self, viewer, layer_type, *, optional: bool = False, none_label: str = "none", parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._layer_type = layer_type
        self._optional = optional
        self._none_label = none_label
        self._layers: list = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.refresh)
        events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def layer(self):
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def set_layer(self, layer) -> None:
        for i, candidate in enumerate(self._layers):
            if _same_layer(candidate, layer) or (layer is None and candidate is None):
                self.setCurrentIndex(i)
                return

    def _on_inserted(self, event=None):
        if event is not None and getattr(event, "value", None) is not None:
            event.value.events.name.connect(self.refresh)
        self.refresh()

    def refresh(self, event=None):
        try:
            current = self.layer()
            had_selection = bool(self._layers)
        except RuntimeError:  # the Qt object is gone (viewer closing)
            return
        self.blockSignals(True)
        self.clear()
        self._layers = []
        if self._optional:
            self.addItem(self._none_label)
            self._layers.append(None)
        # Top layer first, as in napari's layer list.
        for layer in reversed(list(self._viewer.layers)):
            if isinstance(layer, self._layer_type):
                self.addItem(layer.name)
                self._layers.append(layer)
        selected = None
        if current is not None and _in_viewer(self._viewer, current):
            selected = current
        elif not self._optional or not had_selection:
            active = self._viewer.layers.selection.active
            if isinstance(active, self._layer_type) and not self._optional:
                selected = active
        self.blockSignals(False)
        if selected is not None:
            self.set_layer(selected)
        elif self._layers:
            self.setCurrentIndex(0)
        self.currentIndexChanged.emit(self.currentIndex())


class LossPlot(QWidget):
    """A small live plot of the loss (log scale), drawn with QPainter.

    Light on purpose: a plotting library would be a new dependency for one curve.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Loss (log scale) against iteration, for the plane being restored")

    def clear(self) -> None:
        self.iterations.clear()
        self.losses.clear()
        self.update()

    def add(self, iteration: int, loss: float) -> None:
        if math.isfinite(loss) and loss > 0:
            self.iterations.append(iteration)
            self.losses.append(loss)
            self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(4, 4, -4, -14)
        painter.setPen(QPen(QColor(128, 128, 128), 1))
        painter.drawRect(rect)
        if len(self.losses) >= 2:
            logs = np.log10(np.asarray(self.losses))
            low, high = float(logs.min()), float(logs.max())
            span = high - low or 1.0
            first, last = self.iterations[0], self.iterations[-1]
            width = (last - first) or 1
            points = QPolygonF(
                [
                    QPointF(
                        rect.left() + rect.width() * (it - first) / width,
                        rect.bottom() - rect.height() * (value - low) / span,
                    )
                    for it, value in zip(self.iterations, logs)
                ]
            )
            painter.setPen(QPen(QColor(80, 170, 255), 1.5))
            painter.drawPolyline(points)
            painter.setPen(QPen(QColor(160, 160, 160), 1))
            painter.drawText(rect.left(), self.height() - 2, f"loss {self.losses[-1]:.2e}  (log scale)")
        else:
            painter.setPen(QPen(QColor(160, 160, 160), 1))
            painter.drawText(rect.left(), self.height() - 2, "loss")
        painter.end()


# -- the thread worker's function: numpy in, snapshots out, no Qt, no layers --------------


def fit_planes(data, planes, rgb, task, mask_data, mask_per_plane, fit_kwargs):
    """Restore ``data[plane]`` for each plane index in turn, yielding ``(k, snapshot)``,
    then ``(len(planes), None)`` when all are done.

    Runs in the worker thread. A user's mistake or a full device (the engine's
    ``InputError``, ``MemoryError``) is yielded as ``(k, exception)`` so the widget shows
    one clear notification instead of a traceback; anything else is a bug and propagates.
    """
    from .restore import iter_restore

    for k, index in enumerate(planes):
        try:
            image = np.array(data[index])  # a copy: the layer's array is never written
            mask = None
            if mask_data is not None:
                mask = np.array(mask_data[index] if mask_per_plane else mask_data)
            snapshots = iter_restore(
                task, image, mask=mask, channel_axis=-1 if rgb else None, **fit_kwargs
            )
        except (ValueError, MemoryError, FloatingPointError) as error:
            yield k, error
            return
        try:
            for snapshot in snapshots:
                yield k, snapshot
        except (ValueError, MemoryError, FloatingPointError) as error:
            yield k, error
            return
        finally:
            snapshots.close()
    # An end marker through the same signal as the snapshots: Qt does not order the
    # worker's ``finished`` signal after its last ``yielded`` one.
    yield len(planes), None


# -- the state of one run -----------------------------------------------------------------


@dataclass
class Run:
    """Everything one fit needs on the main thread while its worker runs."""

    task: str
    preset: str
    factor: int | None
    input_layer: object
    input_name: str
    planes: list
    out_index: list  # where plane k goes in the output array
    out_data: np.ndarray
    layer: object = None
    keep_snapshots: bool = False
    show_average: bool = True
    iterations: int = 0
    snapshot_every: int = 1
    parameters: dict = field(default_factory=dict)
    seed: int | None = 0
    device: str = "auto"
    base_metadata: dict = field(default_factory=dict)
    reference: np.ndarray | None = None
    reference_per_plane: bool = False
    worker: object = None
    pbar: object = None
    stop_reason: str | None = None
    error: str | None = None
    snapshots_received: int = 0
    snapshot_slot: int = -1
    plane_done: int = 0  # iterations done in the current plane
    planes_finished: int = 0
    iterations_finished: int = 0
    plane_complete: bool = False
    last_plane: int = -1
    engine_settings: dict = field(default_factory=dict)
    rate_anchor: tuple = (0.0, 0)
    last_psnr: float | None = None
    closed: bool = False
    engine_stop_reason: str | None = None
    fit_args: tuple = ()
    geometry: object = None
    version: str = ""

    @property
    def total_iterations(self) -> int:
        return self.iterations * len(self.planes)

    @property
    def done_iterations(self) -> int:
        """Iterations actually run (planes may stop early with automatic stopping)."""
        return self.iterations_finished + self.plane_done

    @property
    def progress_count(self) -> int:
        """Progress in budget units: a plane that stopped early counts as complete."""
        return self.planes_finished * self.iterations + (0 if self.plane_complete else self.plane_done)

    def abandon(self, *args) -> None:
        """The widget is being destroyed (viewer closed): stop the worker, close the bar."""
        self.closed = True
        if self.stop_reason is None:
            self.stop_reason = "closed"
        if self.worker is not None:
            self.worker.quit()
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None


# -- the dock widget ----------------------------------------------------------------------


class DeepImagePriorWidget(QWidget):
    """Restore an Image layer with a deep image prior, watching the result improve."""

    TASK = "denoise"

    def __init__(self, napari_viewer: "napari.viewer.Viewer", task: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.task = task or self.TASK
        self.run_state: Run | None = None
        #: PSNR (dB) of the latest update against the reference layer, if one is chosen.
        self.last_psnr: float | None = None
        self._pending: list = []
        self._handling = False
        self._settings = _plugin_defaults()
        self._build()
        self._load_preset_defaults()
        self._update_planes_choice()
        self._update_device_info()

    # ---- building the interface

    def _build(self) -> None:
        from .devices import available_devices

        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)

        self.image_picker = LayerPicker(self.viewer, Image, parent=self)
        self.image_picker.setToolTip("The layer to restore; it is never modified")
        form.addRow("Image", self.image_picker)

        self.mask_picker = None
        if self.task == "inpaint":
            self.mask_picker = LayerPicker(self.viewer, Labels, parent=self)
            self.mask_picker.setToolTip("Labels layer marking the holes to fill: nonzero = hole")
            form.addRow("Mask (holes)", self.mask_picker)

        self.factor_box = None
        if self.task == "super-resolve":
            self.factor_box = QComboBox()
            self.factor_box.addItems(["2", "3", "4", "8"])
            self.factor_box.setCurrentText("4")
            self.factor_box.setToolTip("The output is this many times larger on each side")
            self.factor_box.currentIndexChanged.connect(self._load_preset_defaults)
            form.addRow("Factor", self.factor_box)

        self.planes_box = QComboBox()
        self.planes_box.addItems([PLANES_IN_VIEW, PLANES_ALL])
        self.planes_box.setToolTip(
            "For a stack (Z, time, ...): restore only the plane shown (quick preview) or every plane in turn"
        )
        form.addRow("Planes", self.planes_box)
        self.image_picker.currentIndexChanged.connect(self._update_planes_choice)

        self.reference_picker = LayerPicker(self.viewer, Image, optional=True, parent=self)
        self.reference_picker.setToolTip("Optional clean image: shows the PSNR of the result as it fits")
        form.addRow("Reference", self.reference_picker)

        self.preset_box = QComboBox()
        self.preset_box.addItem("fast (CPU-friendly)", "fast")
        self.preset_box.addItem("paper quality", "paper")
        preset = getattr(self._settings, "preset", "fast") if self._settings is not None else "fast"
        self.preset_box.setCurrentIndex(max(0, self.preset_box.findData(preset)))
        self.preset_box.currentIndexChanged.connect(self._on_preset_changed)
        form.addRow("Preset", self.preset_box)

        self.show_box = QComboBox()
        self.show_box.addItems([SHOW_AVERAGE, SHOW_OUTPUT])
        self.show_box.setToolTip("The running average of outputs is smoother and is what the engine returns")
        form.addRow("Show", self.show_box)

        self.keep_snapshots = QCheckBox("keep snapshots (stack along an iteration axis)")
        self.keep_snapshots.setToolTip("Scrub back through the fit with the slider and keep the best iteration")
        form.addRow("", self.keep_snapshots)

        # Advanced settings, folded away: the preset's values are shown and can be changed.
        self.advanced = QCollapsible("Advanced")
        advanced_body = QWidget()
        advanced_form = QFormLayout(advanced_body)
        self.iterations_box = QSpinBox()
        self.iterations_box.setRange(1, 1_000_000)
        self.learning_rate_box = QDoubleSpinBox()
        self.learning_rate_box.setDecimals(5)
        self.learning_rate_box.setRange(1e-5, 1.0)
        self.learning_rate_box.setSingleStep(0.001)
        self.noise_box = QDoubleSpinBox()
        self.noise_box.setDecimals(4)
        # One step below 0 is "auto": the engine chooses (for denoising, from the noise level).
        self.noise_box.setRange(-AUTO_STEP, 1.0)
        self.noise_box.setSpecialValueText("auto")
        self.noise_box.setSingleStep(0.005)
        self.noise_box.setToolTip(
            "Standard deviation of the jitter added to the network input each step; "
            "'auto' lets the engine choose (for denoising it follows the image's estimated noise level)"
        )
        self.channels_box = QSpinBox()
        self.channels_box.setRange(1, 512)
        self.channels_box.setToolTip("Network width: channels per scale")
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.every_box = QSpinBox()
        self.every_box.setRange(1, 100_000)
        every = getattr(self._settings, "snapshot_every", 25) if self._settings is not None else 25
        self.every_box.setValue(int(every))
        self.every_box.setToolTip("Update the output layer every this many iterations (fewer updates run faster)")
        self.stopping_box = QComboBox()
        for label, rule in STOPPING_CHOICES:
            self.stopping_box.addItem(label, rule)
        self.stopping_box.setToolTip(
            "Stop when the result stops improving (the output is the best iteration's), or run the whole budget"
        )
        advanced_form.addRow("Iterations", self.iterations_box)
        advanced_form.addRow("Stopping", self.stopping_box)
        advanced_form.addRow("Learning rate", self.learning_rate_box)
        advanced_form.addRow("Input noise", self.noise_box)
        advanced_form.addRow("Network channels", self.channels_box)
        advanced_form.addRow("Seed", self.seed_box)
        advanced_form.addRow("Update every", self.every_box)
        self.advanced.addWidget(advanced_body)
        outer.addWidget(self.advanced)

        device_form = QFormLayout()
        self.device_box = QComboBox()
        self.device_box.addItems(available_devices())
        device = getattr(self._settings, "device", "auto") if self._settings is not None else "auto"
        if self.device_box.findText(device) >= 0:
            self.device_box.setCurrentText(device)
        self.device_box.currentIndexChanged.connect(self._on_device_changed)
        device_form.addRow("Device", self.device_box)
        outer.addLayout(device_form)
        self.device_info = QLabel()
        self.device_info.setWordWrap(True)
        outer.addWidget(self.device_info)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.run_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        for button in (self.run_button, self.pause_button, self.stop_button):
            buttons.addWidget(button)
        outer.addLayout(buttons)

        self.status = QLabel("Ready")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.loss_plot = LossPlot()
        outer.addWidget(self.loss_plot)
        outer.addStretch(1)
        self._set_running(False)

    # ---- reacting to choices

    @property
    def factor(self) -> int | None:
        return int(self.factor_box.currentText()) if self.factor_box is not None else None

    @property
    def preset(self) -> str:
        return self.preset_box.currentData()

    def _on_preset_changed(self, *args) -> None:
        self._load_preset_defaults()
        self._remember("preset", self.preset)

    def _load_preset_defaults(self, *args) -> None:
        """Show the preset's schedule and network width in the advanced section."""
        from .presets import settings_for

        net, fit = settings_for(self.task, self.preset, factor=self.factor)
        self.iterations_box.setValue(fit.iterations)
        self.learning_rate_box.setValue(fit.learning_rate)
        # Denoising's jitter depends on the image (presets.denoising_jitter): leave it to the engine.
        self.noise_box.setValue(self.noise_box.minimum() if self.task == "denoise" else fit.reg_noise_std)
        self.channels_box.setValue(int(net.channels_down[0]))
        self.seed_box.setValue(fit.seed or 0)

    def _update_planes_choice(self, *args) -> None:
        layer = self.image_picker.layer()
        stacked = layer is not None and bool(_layers.leading_shape(layer.data.shape, layer.rgb))
        self.planes_box.setEnabled(stacked)

    def _on_device_changed(self, *args) -> None:
        self._update_device_info()
        self._remember("device", self.device_box.currentText())

    def _update_device_info(self) -> None:
        from .devices import describe_device

        try:
            self.device_info.setText(f"Runs on {describe_device(self.device_box.currentText())}")
        except ValueError as error:
            self.device_info.setText(str(error))

    def _remember(self, name: str, value) -> None:
        if self._settings is not None:
            try:
                setattr(self._settings, name, value)
            except Exception:  # noqa: BLE001 - a value the settings schema refuses is not remembered
                pass

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        if not running:
            self.pause_button.setText("Pause")

    # ---- starting a run

    def _plan(self) -> Run:
        """Read the layers and settings (main thread) into a :class:`Run`; raise InputError."""
        from . import __version__
        from .errors import InputError

        layer = self.image_picker.layer()
        if layer is None:
            raise InputError("choose an Image layer to restore")
        if layer.multiscale:
            raise InputError("multiscale layers are not supported; restore a single-resolution layer")
        data = layer.data
        shape = tuple(data.shape)
        rgb = bool(layer.rgb)
        leading = _layers.leading_shape(shape, rgb)
        plane_shape = shape[len(leading) :]
        height, width = plane_shape[:2]

        if not leading or self.planes_box.currentText() == PLANES_ALL:
            planes = _layers.plane_indices(shape, rgb)
            out_index = planes
            out_leading = leading
            plane_offset = ()
        else:
            index = self._plane_in_view(layer, leading)
            planes = [index]
            out_index = [(0,) * len(leading)]
            out_leading = (1,) * len(leading)
            plane_offset = index

        mask_data, mask_per_plane = None, False
        if self.task == "inpaint":
            mask_layer = self.mask_picker.layer()
            if mask_layer is None:
                raise InputError("inpainting needs a Labels layer marking the holes (nonzero = hole)")
            mask_data = mask_layer.data
            if tuple(mask_data.shape) == (height, width):
                mask_per_plane = False
            elif tuple(mask_data.shape) == leading + (height, width):
                mask_per_plane = True
            else:
                raise InputError(
                    f"the mask {mask_layer.name!r} has shape {tuple(mask_data.shape)} but the image "
                    f"{layer.name!r} needs {(height, width)}"
                    + (f" or {leading + (height, width)}" if leading else "")
                )

        factor = self.factor
        out_plane = _layers.output_plane_shape(shape, rgb, factor)
        out_shape = out_leading + out_plane
        iterations = self.iterations_box.value()
        every = min(self.every_box.value(), iterations)
        keep = self.keep_snapshots.isChecked()
        dtype = np.dtype(data.dtype)
        if keep:
            count = _layers.snapshot_count(iterations, every)
            if count * math.prod(out_shape) * dtype.itemsize > MAX_STACK_BYTES:
                raise InputError(
                    f"keeping {count} snapshots of {out_shape} would need more than "
                    f"{MAX_STACK_BYTES / 2**30:.0f} GiB; update less often or restore one plane"
                )
            out_shape = (count, *out_shape)

        reference, reference_per_plane = None, False
        reference_layer = self.reference_picker.layer()
        if reference_layer is not None:
            ref_shape = tuple(reference_layer.data.shape)
            if ref_shape == out_plane:
                reference = reference_layer.data
            elif ref_shape == leading + out_plane:
                reference, reference_per_plane = reference_layer.data, True
            else:
                show_info(f"PSNR is not shown: the reference has shape {ref_shape}, the result {out_plane}")

        parameters = {
            "iterations": iterations,
            "learning_rate": self.learning_rate_box.value(),
            "reg_noise_std": None if self.noise_box.value() == self.noise_box.minimum() else self.noise_box.value(),
            "channels": self.channels_box.value(),
            "snapshot_every": every,
            "stopping": self.stopping_box.currentData(),
            "show": self.show_box.currentText(),
            "planes": self.planes_box.currentText() if leading else "single image",
        }
        geometry = _layers.output_geometry(_layers.layer_geometry(layer), factor=factor, plane_offset=plane_offset)
        run = Run(
            task=self.task,
            preset=self.preset,
            factor=factor,
            input_layer=layer,
            input_name=layer.name,
            planes=planes,
            out_index=out_index,
            out_data=np.zeros(out_shape, dtype=dtype),
            keep_snapshots=keep,
            show_average=self.show_box.currentText() == SHOW_AVERAGE,
            iterations=iterations,
            snapshot_every=every,
            parameters=parameters,
            seed=self.seed_box.value(),
            device=self.device_box.currentText(),
            base_metadata=dict(layer.metadata),
            reference=reference,
            reference_per_plane=reference_per_plane,
        )
        run.fit_args = (data, planes, rgb, self.task, mask_data, mask_per_plane)
        run.geometry = geometry
        run.version = __version__
        return run

    def _plane_in_view(self, layer, leading) -> tuple[int, ...]:
        """Index along the layer's leading axes of the plane the viewer shows."""
        position = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
        index = []
        for axis, size in enumerate(leading):
            index.append(int(np.clip(np.round(position[axis]), 0, size - 1)))
        return tuple(index)

    def start(self) -> None:
        """Run: create the output layer and start the worker."""
        if self.run_state is not None:
            return
        try:
            run = self._plan()
        except ValueError as error:  # InputError: the message is for the user
            show_error(str(error))
            return
        self._add_output_layer(run)
        fit_kwargs = {
            "preset": run.preset,
            "factor": run.factor,
            "snapshot_every": run.snapshot_every,
            "iterations": run.iterations,
            "learning_rate": run.parameters["learning_rate"],
            "reg_noise_std": run.parameters["reg_noise_std"],
            "channels": run.parameters["channels"],
            "seed": run.seed,
            "device": run.device,
            "stopping": run.parameters["stopping"],
        }
        run.pbar = progress(total=run.total_iterations, desc=f"DIP {self.task}: {run.input_name}")
        run.rate_anchor = (time.perf_counter(), 0)
        worker = create_worker(
            fit_planes, *run.fit_args, fit_kwargs, _start_thread=False
        )
        run.worker = worker
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        worker.paused.connect(self._on_paused)
        worker.resumed.connect(self._on_resumed)
        # When the viewer (and this widget) goes away mid-run, stop the worker without
        # touching the deleted widget: ``abandon`` belongs to the plain Python run object.
        self.destroyed.connect(run.abandon)
        self.run_state = run
        self.loss_plot.clear()
        self.status.setText(f"Starting {self.task} of {run.input_name!r} on {run.device}...")
        self._set_running(True)
        worker.start()

    def _add_output_layer(self, run: Run) -> None:
        layer = run.input_layer
        geometry = run.geometry
        if run.keep_snapshots:
            geometry = _layers.with_leading_axis(
                geometry, label="iteration", scale=run.snapshot_every, translate=run.snapshot_every
            )
        kwargs = geometry.as_layer_kwargs()
        if not layer.rgb:
            kwargs["colormap"] = layer.colormap.name
            kwargs["contrast_limits"] = tuple(layer.contrast_limits)
        run.layer = self.viewer.add_image(
            run.out_data,
            name=_layers.output_name(run.input_name, run.task, run.factor),
            rgb=layer.rgb,
            metadata={**run.base_metadata, "napari_dip": self._metadata(run, "running")},
            **kwargs,
        )

    # ---- while it runs (main thread, through the worker's signals)

    def _on_yielded(self, item) -> None:
        # Updating a layer or the progress bar can process Qt events, which may deliver
        # the next snapshot (or the end) re-entrantly, in the middle of this one: queue
        # them and handle one at a time, in order.
        self._pending.append(item)
        if self._handling:
            return
        self._handling = True
        try:
            while self._pending:
                item = self._pending.pop(0)
                if item is _WORKER_FINISHED:
                    if self.run_state is not None:
                        self._finish(self.run_state)
                else:
                    self._handle_snapshot(item)
        finally:
            self._handling = False

    def _handle_snapshot(self, item) -> None:
        run = self.run_state
        if run is None or run.closed:
            return
        k, snapshot = item
        if snapshot is None:  # the end marker: every plane is done
            self._finish(run)
            return
        if isinstance(snapshot, BaseException):
            run.error = str(snapshot)
            run.stop_reason = "error"
            show_error(f"napari-dip: {snapshot}")
            self._finish(run)
            return
        if snapshot.settings:  # the first and the final snapshot say how the fit is made
            run.engine_settings = snapshot.settings
        if snapshot.done:
            run.engine_stop_reason = snapshot.stop_reason
        if not _in_viewer(self.viewer, run.layer):
            run.stop_reason = "output layer removed"
            run.worker.quit()
            show_error("napari-dip: the output layer was removed, so the fit was stopped")
            return
        if k != run.last_plane:
            run.iterations_finished += run.plane_done
            run.last_plane = k
            run.plane_done = 0
            run.plane_complete = False
            self.loss_plot.clear()

        image = snapshot.average if run.show_average else snapshot.output
        target = run.out_index[k]
        if run.keep_snapshots:
            run.snapshot_slot = snapshot.iteration // run.snapshot_every - (snapshot.iteration % run.snapshot_every == 0)
            run.snapshot_slot = min(run.snapshot_slot, run.out_data.shape[0] - 1)
            run.out_data[(run.snapshot_slot, *target)] = image
        else:
            run.out_data[target] = image
        run.layer.refresh()
        if run.keep_snapshots:
            self._follow_snapshot(run)

        previous = run.progress_count
        run.plane_done = snapshot.iteration
        if snapshot.done:
            run.planes_finished += 1
            run.plane_complete = True
        run.snapshots_received += 1
        if run.pbar is not None:
            run.pbar.update(run.progress_count - previous)
        self.loss_plot.add(snapshot.iteration, snapshot.loss)
        self._update_status(run, snapshot, image, k)

    def _follow_snapshot(self, run: Run) -> None:
        # Show the newest snapshot: the stack's first axis is the viewer's first here.
        axis = self.viewer.dims.ndim - run.layer.ndim
        step = list(self.viewer.dims.current_step)
        step[axis] = run.snapshot_slot
        self.viewer.dims.current_step = tuple(step)

    def _update_status(self, run: Run, snapshot, image, k: int) -> None:
        now = time.perf_counter()
        anchor_time, anchor_done = run.rate_anchor
        rate = (run.done_iterations - anchor_done) / (now - anchor_time) if now > anchor_time else 0.0
        remaining = run.total_iterations - run.progress_count
        eta = _format_seconds(remaining / rate) if rate > 0 else "?"
        parts = [f"iteration {snapshot.iteration}/{snapshot.iterations}"]
        if len(run.planes) > 1:
            parts.append(f"plane {k + 1}/{len(run.planes)}")
        parts += [f"{rate:.1f} it/s", f"ETA {eta}", f"loss {snapshot.loss:.2e}"]
        if run.reference is not None:
            run.last_psnr = _psnr(run.reference[run.planes[k]] if run.reference_per_plane else run.reference, image)
            self.last_psnr = run.last_psnr
            parts.append(f"PSNR {run.last_psnr:.2f} dB")
        if snapshot.backtracks:
            parts.append(f"{snapshot.backtracks} backtracks")
        if run.worker is not None and run.worker.is_paused:
            parts.append("paused")  # a snapshot in flight when Pause was pressed
        self.status.setText(" · ".join(parts))

    def _on_paused(self) -> None:
        if self.run_state is not None and not self.run_state.closed:
            self.pause_button.setText("Resume")
            self.status.setText(self.status.text() + " · paused")

    def _on_resumed(self) -> None:
        run = self.run_state
        if run is not None and not run.closed:
            self.pause_button.setText("Pause")
            run.rate_anchor = (time.perf_counter(), run.done_iterations)

    def toggle_pause(self) -> None:
        run = self.run_state
        if run is None or run.worker is None:
            return
        if run.worker.is_paused:
            run.worker.resume()
        else:
            run.worker.pause()

    def stop(self) -> None:
        """Stop the fit; the output layer keeps the latest result."""
        run = self.run_state
        if run is None or run.worker is None:
            return
        if run.stop_reason is None:
            run.stop_reason = "user"
        self.status.setText(self.status.text() + " · stopping")
        run.worker.quit()

    def _on_finished(self) -> None:
        # Reached without the end marker when the run was stopped or the viewer closed.
        run = self.run_state
        if run is not None and run.closed:
            self._finish(run)  # the widget is gone: only close the progress bar
        elif run is not None:
            self._on_yielded(_WORKER_FINISHED)

    def _finish(self, run: Run) -> None:
        """Close the progress bar, write the metadata and re-enable Run (once per run)."""
        if self.run_state is not run:
            return
        self.run_state = None
        if run.pbar is not None:
            run.pbar.close()
            run.pbar = None
        if run.closed:  # the widget is gone; only the run object is left
            return
        self._set_running(False)
        reason = run.stop_reason or getattr(run, "engine_stop_reason", None) or "budget"
        if run.snapshots_received == 0:
            # Nothing was restored (bad input, no memory): leave no empty layer behind.
            if _in_viewer(self.viewer, run.layer):
                self.viewer.layers.remove(run.layer)
            self.status.setText(f"Failed: {run.error}" if run.error else "Stopped before the first update")
            return
        if not _in_viewer(self.viewer, run.layer):
            self.status.setText("Stopped: the output layer was removed")
            return
        if run.keep_snapshots and run.snapshot_slot + 1 < run.out_data.shape[0]:
            run.layer.data = run.out_data[: run.snapshot_slot + 1]
        run.layer.metadata = {**run.base_metadata, "napari_dip": self._metadata(run, reason)}
        done = run.done_iterations
        text = {
            "budget": "Finished",
            "user": "Stopped; the output keeps the latest result",
            "error": f"Stopped by an error: {run.error}",
        }.get(reason, f"Finished ({reason})")
        self.status.setText(f"{text} · {done} iterations · {run.layer.name}")

    def _metadata(self, run: Run, stop_reason: str) -> dict:
        settings = run.engine_settings or {}
        metadata = _layers.run_metadata(
            task=run.task,
            preset=run.preset,
            factor=run.factor,
            parameters=run.parameters,
            seed=settings.get("fit", {}).get("seed", run.seed),
            device=settings.get("device", run.device),
            iterations_run=run.done_iterations,
            iterations_planned=run.total_iterations,
            stop_reason=stop_reason,
            input_name=run.input_name,
            planes=run.planes,
            version=run.version,
            engine_settings=settings,
        )
        if run.last_psnr is not None:
            metadata["psnr_vs_reference"] = run.last_psnr
        if run.error:
            metadata["error"] = run.error
        return metadata


class DenoiseWidget(DeepImagePriorWidget):
    """Remove noise from an Image layer."""

    TASK = "denoise"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__(napari_viewer, "denoise")


class SuperResolveWidget(DeepImagePriorWidget):
    """Upscale an Image layer 2, 3, 4 or 8 times."""

    TASK = "super-resolve"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__(napari_viewer, "super-resolve")


class InpaintWidget(DeepImagePriorWidget):
    """Fill the holes of an Image layer marked in a Labels layer."""

    TASK = "inpaint"

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__(napari_viewer, "inpaint")


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _psnr(reference, image) -> float:
    """PSNR in dB with the data range of the reference's type: 255 for uint8, 1 for
    floats in [0, 1], otherwise the reference's own range."""
    dtype = np.asarray(reference).dtype
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        return float("nan")
    if dtype == np.uint8:
        span = 255.0
    elif dtype.kind == "f" and reference.min() >= 0.0 and reference.max() <= 1.0:
        span = 1.0
    else:
        span = float(reference.max() - reference.min())
    mse = float(np.mean((reference - image) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10((span or 1.0) ** 2 / mse)


SAMPLE_FOR_TASK = {"denoise": "noisy_camera", "super-resolve": "noisy_camera", "inpaint": "inpainting"}
WIDGET_FOR_TASK = {"denoise": "Denoise", "super-resolve": "Super-resolve", "inpaint": "Inpaint"}


def open_with_sample(viewer=None, task: str = "denoise"):
    """Open the plugin's sample for ``task`` and dock its widget; return ``(viewer, widget)``.

    For a command line entry (``napari.run()`` afterwards) or a notebook: a new user sees
    the sample loaded and only has to press Run. Creates a viewer when none is given.
    """
    if task not in WIDGET_FOR_TASK:
        raise ValueError(f"unknown task {task!r}; choose one of {tuple(WIDGET_FOR_TASK)}")
    if viewer is None:
        viewer = napari.Viewer(title="napari-dip")
    viewer.open_sample(PLUGIN_NAME, SAMPLE_FOR_TASK[task])
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_FOR_TASK[task])
    return viewer, widget
