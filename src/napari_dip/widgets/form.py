"""The form of a dock widget, in magicgui: the layer boxes (:mod:`.layer_boxes`), the
task's options, the device with a line saying what it is, and the advanced settings
(shown in a collapsed section by the dock). :meth:`TaskForm.choices` reads it all into
plain values for :func:`.plan.make_plan`.
"""

from __future__ import annotations

import time

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QSizePolicy

from . import prefs
from .layer_boxes import LayerBoxes
from .plan import PLANES_ALL, PLANES_IN_VIEW, SHOW_AVERAGE, SHOW_OUTPUT, Choices, channel_group

#: The stopping box's labels and the engine's rule names (``iter_restore(stopping=...)``).
STOPPING_CHOICES = [("auto", "auto"), ("ES-WMV", "wmv"), ("held-out", "validation"), ("off", "none")]
PRESET_CHOICES = ["auto", "fast", "paper"]
#: The noise box's labels and the engine's models (``iter_restore(noise=...)``).
NOISE_CHOICES = [("auto", "auto"), ("Gaussian", "gaussian"), ("Poisson-Gaussian", "poisson-gaussian")]
#: The network's input when denoising, and the ``iter_restore(recorrupt=...)`` each means.
INPUT_CHOICES = [("auto", "auto"), ("noisy image, recorrupted", "recorrupted"), ("noise (paper)", "noise")]
RECORRUPT_FOR_INPUT = {"auto": None, "recorrupted": True, "noise": False}
FACTORS = [2, 3, 4, 8]
#: The input-noise box's "auto" sits one 4-decimal step below zero (a valid jitter).
AUTO_STEP = 1e-4


def _narrow(box) -> None:
    """Let a combo box shrink with the dock instead of growing to its longest item."""
    native = box.native
    if isinstance(native, QComboBox):
        native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        native.setMinimumContentsLength(8)


class TaskForm:
    """The widgets of one task's form and the plain values they hold (:meth:`choices`)."""

    def __init__(self, viewer, task: str, settings=None, warm_up: bool = True):
        self.viewer = viewer
        self.task = task
        self.settings = settings
        #: Whether the chosen device is started in the background (not for the Batch dock,
        #: whose fits run in other processes).
        self.warm_up = warm_up
        self.device_note = ""
        self._device_timer = None  # looks again at a device that is starting
        self._device_wait_since: float | None = None  # since when (time.monotonic())
        #: The last channel group selected: kept when the selection moves on (a new output
        #: layer is selected when it is added), as long as its layers exist.
        self._group: list = []
        self._build()
        self.reset_choices()
        self.load_preset_defaults()
        self.update_group()
        # The warm-up first: on a GPU it starts CUDA in the background, and the device line
        # waits for it instead of starting CUDA here, on napari's UI thread.
        self.warm_up_device()
        self.update_device_info()
        self.image.changed.connect(self.update_planes)
        self.planes.changed.connect(self.update_planes)
        self.volumetric.changed.connect(self.update_planes)
        self.together.changed.connect(self.update_planes)
        self.runs.changed.connect(self.update_planes)
        viewer.layers.selection.events.changed.connect(self.update_group)
        self.preset.changed.connect(self._on_preset)
        self.device.changed.connect(self._on_device)
        if self.factor is not None:
            self.factor.changed.connect(self.load_preset_defaults)

    # -- building

    def _build(self) -> None:
        from ..engine.devices import available_devices

        self.boxes = LayerBoxes(self.viewer, with_mask=self.task == "inpaint")
        self.image, self.mask, self.reference = self.boxes.image, self.boxes.mask, self.boxes.reference
        self.mask_known = self.raw_output = self.factor = self.noise = self.network_input = None
        task_widgets = []
        if self.task == "denoise":
            self.noise = ComboBox(label="Noise", choices=NOISE_CHOICES, value="auto",
                                  tooltip="Gaussian: the same noise everywhere. Poisson-Gaussian: photon-limited "
                                  "noise growing with the signal (fluorescence). auto: estimated from the image "
                                  "(the choice and its parameters go into the output's metadata)")
            task_widgets.append(self.noise)
            self.network_input = ComboBox(
                label="Network input", choices=INPUT_CHOICES, value="auto",
                tooltip="What the network is given. Noisy image, recorrupted: fresh noise of the estimated level "
                "split between input and target at every step. Noise: the paper's fixed random input. auto: "
                "recorrupted with the auto and fast presets for white noise (Gaussian, or photon-limited through "
                "the Anscombe transform), the paper's way otherwise (the output's metadata says which, and why)")
            task_widgets.append(self.network_input)
        if self.task == "inpaint":
            self.mask_known = CheckBox(text="mask marks known pixels", value=False,
                                       tooltip="Nonzero mask pixels are the known ones (published DIP masks)")
            self.raw_output = CheckBox(text="raw network output", value=False,
                                       tooltip="Off: the known pixels stay exactly as they are and only the holes "
                                       "come from the network. On: the network's whole image")
            task_widgets += [self.mask, self.mask_known, self.raw_output]
        if self.task == "super-resolve":
            self.factor = ComboBox(label="Factor", choices=FACTORS, value=4,
                                   tooltip="The output is this many times larger on each side")
            task_widgets.append(self.factor)
        preset = prefs.recall(self.settings, "preset", "auto")
        self.preset = ComboBox(label="Preset", choices=PRESET_CHOICES,
                               value=preset if preset in PRESET_CHOICES else "auto",
                               tooltip="auto: paper's network on a CUDA GPU, fast elsewhere, denoising by "
                               "recorruption with either. fast: a narrower network, practical on a CPU. paper: the "
                               "published settings")
        devices = available_devices()
        device, self.device_note = prefs.device_choice(prefs.recall(self.settings, "device", "auto"), devices)
        self.device = ComboBox(label="Device", choices=devices, value=device,
                               tooltip="auto: CUDA, then Apple MPS, then the CPU")
        self.device_info = Label(value="")
        self.device_info.native.setWordWrap(True)
        self.device_info.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.planes = ComboBox(label="Planes", choices=[PLANES_IN_VIEW, PLANES_ALL],
                               tooltip="For a stack (Z, time, ...): only the plane shown, or every plane in turn")
        # Measured on drifting stacks, three x4 ones and three inpainted, with the drift rule
        # and half the rate (BENCHMARKS.md, "Half the learning rate for warm planes").
        drift_note = (". A plane whose picture drifted more than 3 px from its chain's first plane is fitted "
                      "from scratch" if self.task in ("super-resolve", "inpaint") else "")
        task_note = {
            "super-resolve": ". On drifting super-resolved stacks the later planes took 29-40 % of the first "
                             "plane's time, and none was more than 0.8 dB below its fit from scratch",
            "inpaint": ". On drifting inpainted stacks the later planes took about a quarter of the first "
                       "plane's time, and none was more than 0.7 dB below its fit from scratch",
        }.get(self.task, "")
        if task_note:
            task_note += ": untick it where every plane must be at its best"
        self.warm_start = CheckBox(text="warm start across planes", value=True,
                                   tooltip="Each plane starts from the previous plane's network: a short fit "
                                   "at half the learning rate" + drift_note + task_note
                                   + ". Off: every plane is fitted from scratch")
        # 3D: denoising only, where one Z-stack's fit replaces the plane-by-plane ones.
        self.volumetric = CheckBox(text="3D (whole Z-stack)", value=False, visible=self.task == "denoise",
                                   tooltip="Fit the whole Z-stack at once with a 3D network, which sees the "
                                   "planes above and below; the voxel spacing comes from the layer's scale")
        self.together = CheckBox(text="selected layers as channels", value=False,
                                 tooltip="Restore the Image layers selected in the layer list together, as the "
                                 "channels of one image (e.g. the layers of add_image(..., channel_axis=...)); "
                                 "each gets its own output with its colormap and blending")
        self.replace = CheckBox(text="replace previous output", value=True,
                                tooltip="Write into the last output of this image and task instead of adding a layer")
        self.basic = Container(widgets=[self.image, *task_widgets, self.reference, self.preset, self.device,
                                        self.planes, self.warm_start, self.volumetric, self.together,
                                        self.replace])

        self.iterations = SpinBox(label="Iterations", min=1, max=1_000_000,
                                  tooltip="The budget; automatic stopping usually ends the fit sooner")
        self.stopping = ComboBox(label="Stopping", choices=STOPPING_CHOICES, value="auto",
                                 tooltip="auto: the task's default rule. ES-WMV: when the output's variance is "
                                 "lowest. held-out: when held-out pixels stop improving. off: run the budget")
        self.learning_rate = FloatSpinBox(label="Learn rate", min=1e-5, max=1.0, step=0.001,
                                          tooltip="Adam's learning rate; the preset's by default")
        self.learning_rate.native.setDecimals(5)
        self.input_noise = FloatSpinBox(label="Input noise", min=-AUTO_STEP, max=1.0, step=0.005,
                                        tooltip="Jitter added to the network input each step; auto: the engine "
                                        "chooses (for denoising with the auto and fast presets and white noise: "
                                        "none, the noisy image is recorrupted instead; a value here fits the "
                                        "paper's way)")
        self.input_noise.native.setDecimals(4)
        self.input_noise.native.setSpecialValueText("auto")
        # A float box with no decimals: magicgui's integer box (superqt's) shows no special text.
        self.channels = FloatSpinBox(label="Channels", min=0, max=512, step=1,
                                     tooltip="Network width: channels per scale. auto: the preset's network "
                                     "for the fit (denoising with fast: 16 in 3 scales when the noisy image is "
                                     "recorrupted, 32 in 5 otherwise)")
        self.channels.native.setDecimals(0)
        self.channels.native.setSpecialValueText("auto")
        self.seed = SpinBox(label="Seed", min=0, max=2**31 - 1, tooltip="Same seed, same result")
        self.update_every = SpinBox(label="Update every", min=1, max=100_000,
                                    value=int(prefs.recall(self.settings, "snapshot_every", 25)),
                                    tooltip="Iterations between updates of the output (and at least every 2 s)")
        self.show = ComboBox(label="Show", choices=[SHOW_AVERAGE, SHOW_OUTPUT],
                             tooltip="The running average of outputs is smoother and is what the engine returns")
        self.keep_snapshots = CheckBox(text="keep snapshots", value=False,
                                       tooltip="Stack the updates along an iteration axis, to scrub back")
        # Trust outputs (issue 11): the runs' spread and, for denoising, the residual, as layers.
        self.runs = SpinBox(label="Runs", min=1, max=16, value=1,
                            tooltip="Independent fits (seeds seed, seed + 1, ...) averaged into the result, "
                            "run together; 2 or more give an uncertainty layer")
        self.uncertainty_layer = CheckBox(text="uncertainty layer", value=False, enabled=False,
                                          tooltip="Add a layer with the per-pixel standard deviation of the runs' "
                                          "results (needs 2 runs or more): large where the result is not "
                                          "determined by the data")
        self.residual_layer = CheckBox(text="residual layer", value=False, visible=self.task == "denoise",
                                       tooltip="Add a layer with input minus result in the noise model's units "
                                       "(divided by its standard deviation for Poisson-Gaussian noise): "
                                       "structure-free noise if the restoration is good")
        self.advanced = Container(widgets=[self.iterations, self.stopping, self.learning_rate, self.input_noise,
                                           self.channels, self.seed, self.update_every, self.show,
                                           self.keep_snapshots, self.runs, self.uncertainty_layer,
                                           self.residual_layer])
        for box in (self.image, self.mask, self.factor, self.noise, self.network_input, self.reference, self.preset,
                    self.device,
                    self.planes, self.stopping, self.show):
            if box is not None:
                _narrow(box)
        for container in (self.basic, self.advanced):
            container.native.layout().setContentsMargins(0, 0, 0, 0)

    def align_labels(self) -> None:
        """Give the labels of both sections one width, measured with the font napari's
        style sheet gives them (magicgui measures before the style sheet applies)."""
        labelled = [w._labeled_widget() for w in [*self.basic, *self.advanced]]
        labels = [lw._label_widget.native for lw in labelled if lw is not None]
        if labels:
            width = max(label.sizeHint().width() for label in labels)
            for label in labels:
                label.setMinimumWidth(width)

    def reset_choices(self, *args) -> None:
        """Follow the layer list (napari calls this on every change to it)."""
        self.boxes.reset_choices()

    # -- reacting to choices

    def update_planes(self, *args) -> None:
        """Planes and warm start apply to a stack (the image's, or the channel group's)."""
        from .layers import leading_shape

        group = self.group() if self.together.value else []
        layer = group[0] if group else self.image.value
        stack = layer is not None and bool(leading_shape(layer.data.shape, layer.rgb))
        self.planes.enabled = stack
        self.volumetric.enabled = stack and self.planes.value == PLANES_ALL
        volumetric = self.volumetric.enabled and bool(self.volumetric.value)
        self.warm_start.enabled = stack and self.planes.value == PLANES_ALL and not volumetric
        # The spread of several runs; the 3D fit has one run.
        self.uncertainty_layer.enabled = self.runs.value >= 2 and not volumetric
        self.image.enabled = not group

    def group(self) -> list:
        """The channel group selected in the layer list, or the last one while it exists."""
        selected = channel_group(self.viewer)
        if selected:
            self._group = selected
            return selected
        present = {layer.unique_id for layer in self.viewer.layers}
        if self._group and all(layer.unique_id in present for layer in self._group):
            return list(self._group)
        self._group = []
        return []

    def update_group(self, *args) -> None:
        """Offer restoring together while a channel group is selected in the layer list."""
        try:
            self.together.enabled = bool(self.group()) or bool(self.together.value)
            self.update_planes()
        except RuntimeError:  # the Qt widgets are gone (the viewer is closing)
            return

    def resolved_preset(self) -> str:
        from ..engine.presets import resolve_preset

        try:
            return resolve_preset(self.preset.value, self.device.value)
        except ValueError:
            return "fast"

    def load_preset_defaults(self, *args) -> None:
        """Show the preset's schedule and network width in the advanced section."""
        from ..engine.presets import settings_for

        factor = self.factor.value if self.factor is not None else None
        net, fit = settings_for(self.task, self.resolved_preset(), factor=factor)
        self.iterations.value = fit.iterations
        self.learning_rate.value = fit.learning_rate
        # Denoising's jitter follows the image's noise level: left to the engine.
        self.input_noise.value = self.input_noise.min if self.task == "denoise" else fit.reg_noise_std
        # Denoising's network follows the network input (recorrupted or not): left to the engine.
        self.channels.value = 0 if self.task == "denoise" else int(net.channels_down[0])
        self.seed.value = fit.seed or 0

    def _on_preset(self, value) -> None:
        self.load_preset_defaults()
        prefs.remember(self.settings, "preset", value)

    def _on_device(self, value) -> None:
        self.device_note = ""
        self._device_wait_since = None
        self.warm_up_device()
        self.update_device_info()
        prefs.remember(self.settings, "device", value)
        if self.preset.value == "auto":
            self.load_preset_defaults()

    def update_device_info(self) -> None:
        from ..engine import warm
        from ..engine.devices import cuda_start_pending, describe_device, resolve_device

        try:
            chosen = self.device.value
            # Naming a CUDA device's model and memory starts CUDA: seconds on the UI thread.
            # While the warm-up starts it in the background, the line says so and is
            # filled in when it is done; a dock without a warm-up (Batch: its fits run in
            # other processes) leaves the card unnamed rather than start CUDA itself.
            pending = cuda_start_pending(chosen)
            device = resolve_device(chosen) if pending else None
            state = warm.state(device) if pending and self.warm_up else None
            waited = time.monotonic() - self._device_wait_since if self._device_wait_since is not None else 0.0
            if state == "running" and waited < warm.WAIT_SECONDS:
                text = f"Runs on {device}: a CUDA GPU, starting in the background"
                self._describe_device_when_started()
            elif state == "running":
                text = f"Runs on {device}: a CUDA GPU, still starting after {warm.WAIT_SECONDS:.0f} s"
            elif state == "failed":
                text = f"{device} did not start: {warm.failures.get(str(device))}"
            elif pending and not self.warm_up:
                text = f"Runs on {device}: a CUDA GPU"
            else:
                text = f"Runs on {describe_device(chosen)}"
            if state != "running":
                self._device_wait_since = None
        except ValueError as error:
            text = str(error)
        if self.device_note:
            text = f"{self.device_note[0].upper()}{self.device_note[1:]}. {text}"
        self.device_info.value = text
        self.device_info.tooltip = text

    def _describe_device_when_started(self) -> None:
        """Look again in a quarter of a second, on the UI thread, for at most
        :data:`napari_dip.engine.warm.WAIT_SECONDS` (as long as a fit waits for a warm-up). The timer
        belongs to the device line, so closing the dock ends it."""
        if self._device_wait_since is None:
            self._device_wait_since = time.monotonic()
        if self._device_timer is None:
            self._device_timer = QTimer(self.device_info.native)
            self._device_timer.setSingleShot(True)
            self._device_timer.setInterval(250)
            self._device_timer.timeout.connect(self.update_device_info)
        self._device_timer.start()

    def warm_up_device(self) -> None:
        """Start the chosen device in the background while the user is still choosing
        (:mod:`napari_dip.engine.warm`), so that the session's first Run waits less."""
        from ..engine.devices import resolve_device
        from ..engine.warm import start_warm_up

        if not self.warm_up:
            return
        try:
            start_warm_up(resolve_device(self.device.value))
        except ValueError:
            pass  # the device line under the box already says what is wrong with the choice

    # -- reading

    def choices(self) -> Choices:
        """The form's values as plain values and layers."""
        noise = self.input_noise.value
        stopping = self.stopping.value
        return Choices(
            task=self.task,
            image=self.image.value,
            mask=self.mask.value if self.mask is not None else None,
            mask_marks_known=bool(self.mask_known.value) if self.mask_known is not None else False,
            raw_output=bool(self.raw_output.value) if self.raw_output is not None else False,
            factor=self.factor.value if self.factor is not None else None,
            noise=self.noise.value if self.noise is not None else "auto",
            recorrupt=RECORRUPT_FOR_INPUT[self.network_input.value] if self.network_input is not None else None,
            reference=self.reference.value,
            preset=self.preset.value,
            preset_resolved=self.resolved_preset(),
            device=self.device.value,
            planes=self.planes.value,
            warm_start=bool(self.warm_start.value),
            volumetric=bool(self.volumetric.value) and self.volumetric.enabled and self.task == "denoise",
            together=bool(self.together.value),
            group=self.group() if self.together.value else [],
            replace=bool(self.replace.value),
            iterations=int(self.iterations.value),
            stopping=None if stopping == "auto" else stopping,
            learning_rate=float(self.learning_rate.value),
            reg_noise_std=None if noise <= self.input_noise.min + AUTO_STEP / 2 else float(noise),
            channels=int(self.channels.value) or None,
            seed=int(self.seed.value),
            snapshot_every=int(self.update_every.value),
            show=self.show.value,
            keep_snapshots=bool(self.keep_snapshots.value),
            runs=int(self.runs.value),
            uncertainty_layer=bool(self.uncertainty_layer.value) and self.uncertainty_layer.enabled,
            residual_layer=bool(self.residual_layer.value) and self.task == "denoise",
        )
