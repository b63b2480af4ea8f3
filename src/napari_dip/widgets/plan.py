"""From the form's choices to a run's plan: read the layers (main thread), check what can be
checked without the engine, and work out the output's shape and place. No Qt here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import layers as geo

PLANES_IN_VIEW = "plane in view"
PLANES_ALL = "all planes"
SHOW_AVERAGE = "running average"
SHOW_OUTPUT = "current output"
#: Refuse to preallocate a kept-snapshots stack larger than this (bytes).
MAX_STACK_BYTES = 2 * 2**30
#: Snapshots also come this often (seconds), so a slow fit shows something soon.
SNAPSHOT_SECONDS = 2.0


@dataclass
class Choices:
    """What the form holds, as plain values and layers."""

    task: str
    image: object = None
    mask: object = None
    mask_marks_known: bool = False
    #: Inpainting: the network's whole image instead of keeping the known pixels.
    raw_output: bool = False
    factor: int | None = None
    #: Denoising: the noise model (``iter_restore(noise=...)``).
    noise: str = "auto"
    #: Denoising: recorrupt the noisy image as the network's input (``None``: as the preset does).
    recorrupt: bool | None = None
    reference: object = None
    preset: str = "auto"
    preset_resolved: str = "fast"
    #: What the output's name calls the settings, from the fit's record (:func:`~.layers.preset_label`);
    #: ``None`` until the first snapshot says: ``preset_resolved`` names it meanwhile.
    preset_label: str | None = None
    device: str = "auto"
    planes: str = PLANES_IN_VIEW
    warm_start: bool = True
    #: Fit the whole Z-stack at once with the 3D network (``volumetric=True``).
    volumetric: bool = False
    #: Restore the Image layers in ``group`` (the layer list's selection) as the channels of one image.
    together: bool = False
    group: list = field(default_factory=list)
    replace: bool = True
    iterations: int = 1000
    stopping: str | None = None
    learning_rate: float = 0.01
    reg_noise_std: float | None = None
    #: Network width (channels per scale); ``None``: the preset's network for the fit.
    channels: int | None = None
    seed: int = 0
    snapshot_every: int = 25
    show: str = SHOW_AVERAGE
    keep_snapshots: bool = False
    #: Independent fits averaged into the result (``iter_restore(runs=...)``).
    runs: int = 1
    #: Optional trust layers (:mod:`.trust`): the runs' spread, and the denoising residual.
    uncertainty_layer: bool = False
    residual_layer: bool = False

    @property
    def output_preset(self) -> str:
        """What the output layers' names call the settings: :attr:`preset_label` once the
        fit's record gave it, :attr:`preset_resolved` until then."""
        return self.preset_label or self.preset_resolved


@dataclass
class Plan:
    """Everything a run needs, read from the layers on the main thread."""

    task: str
    input_layer: object  # the first of ``sources``
    input_name: str
    rgb: bool
    planes: list  # the restored planes' indices along the layer's leading axes
    out_index: list  # where plane k goes in each output array
    out_shape: tuple  # of each output
    dtype: np.dtype
    plane_offset: tuple  # the first restored plane, for an output of the plane in view only
    fit_args: tuple  # the worker's arguments before ``fit_kwargs`` (see :func:`.worker.fit`)
    fit_kwargs: dict
    parameters: dict
    choices: Choices
    #: The input layers, one output each: one layer, or a channel group restored together.
    sources: list = field(default_factory=list)
    #: The ``axes`` the API gets (``"ZYX"``, ``"TZYXC"``, ``"ZCYX"``, ``"CYX"``, ``"YX"``).
    axes: str = "YX"
    reference: np.ndarray | None = None
    reference_per_plane: bool = False
    #: Things the user should know that do not stop the run (shown in the status line).
    notes: list = field(default_factory=list)
    #: The layer's axes as the fit sees them, the two displayed last (the image plane), when
    #: that is not the layer's own order (:func:`.layers.view_order`); ``planes`` index the others.
    order: tuple | None = None
    #: The fit's estimated peak memory, for the status line before the run ("" if unknown).
    memory: str = ""
    #: The trust layers to add when the run ends: ``"uncertainty"``, ``"residual"`` (:mod:`.trust`).
    trust: tuple = ()

    @property
    def iterations(self) -> int:
        return self.choices.iterations

    @property
    def snapshot_every(self) -> int:
        return self.fit_kwargs["snapshot_every"]

    @property
    def keep_snapshots(self) -> bool:
        return self.choices.keep_snapshots

    @property
    def joint(self) -> bool:
        """Several layers restored together as channels (one output each)."""
        return len(self.sources) > 1

    @property
    def stack(self) -> bool:
        """Several planes streamed by ``iter_restore_planes``."""
        return self.fit_args[4]

    @property
    def warm_start(self) -> bool | None:
        """Whether planes are warm-started from the previous one (``None``: one plane)."""
        return self.choices.warm_start if self.stack and len(self.planes) > 1 else None


def is_image(layer) -> bool:
    return type(layer).__name__ == "Image"


def channel_group(viewer) -> list:
    """The Image layers selected in the layer list, in its order (channel 0 at the
    bottom, as ``viewer.add_image(data, channel_axis=...)`` adds them), when they can be
    restored together: two or more, one shape and dtype, not RGB, one resolution. Else ``[]``."""
    selection = viewer.layers.selection
    layers = [layer for layer in viewer.layers if layer in selection and is_image(layer)]
    if len(layers) < 2 or len(layers) != len(selection):
        return []
    kinds = {(layer.data.shape, np.dtype(layer.data.dtype), bool(layer.rgb), bool(layer.multiscale)) for layer in layers}
    if len(kinds) > 1 or next(iter(kinds))[2:] != (False, False):
        return []
    return layers


def plane_in_view(viewer, layer, leading, order=None) -> tuple[int, ...]:
    """Index along the layer's leading axes (in ``order``) of the plane the viewer shows."""
    position = np.asarray(layer.world_to_data(viewer.dims.point[-layer.ndim :]))
    if order is not None:
        position = position[list(order)]
    return tuple(int(np.clip(np.round(position[axis]), 0, size - 1)) for axis, size in enumerate(leading))


def _arranger(order):
    """A function putting an array's axes in ``order`` (a view), or leaving it as it is."""
    if order is None:
        return lambda array: array
    return lambda array: np.transpose(array, order)


def _sources(choices: Choices) -> list:
    from ..errors import InputError

    if not choices.together:
        if choices.image is None:
            raise InputError("choose an Image layer to restore")
        return [choices.image]
    layers = list(choices.group)
    if len(layers) < 2:
        raise InputError(
            "to restore layers together as channels, select two or more Image layers of one shape and type "
            "in the layer list (the layers viewer.add_image(..., channel_axis=...) makes)"
        )
    return layers


def _fit_input(arrays, planes, stack: bool, letters: str | None, rgb: bool):
    """The array the API gets, its axes, and the planes' indices in the API's terms.

    A stack is handed over whole (channels stacked before Y); more than two leading axes,
    or labels that do not say T and Z, as one axis of planes (the order is the same).
    One plane: that plane alone (channels first)."""
    plane_axes = "CYX" if len(arrays) > 1 else "YXC" if rgb else "YX"
    if not stack:
        index = planes[0]
        images = [np.asarray(array[index]) for array in arrays]
        return (np.stack(images) if len(images) > 1 else images[0]), plane_axes, planes
    leading = len(planes[0])
    if len(arrays) > 1:
        data = np.stack([np.asarray(array) for array in arrays], axis=leading)
    else:
        data = arrays[0]
    if letters is None:
        data = np.asarray(data)
        data = data.reshape((-1, *data.shape[leading:]))
        return data, "Z" + plane_axes, [(k,) for k in range(len(planes))]
    return data, letters + plane_axes, planes


def _volume_spacing(layer, order, letters: str | None, stack: bool) -> tuple[float, float, float]:
    """The ``(z, y, x)`` voxel spacing of a layer restored in 3D, from its ``scale``;
    ``InputError`` when the layer is not one Z-stack with all its planes."""
    from ..errors import InputError

    if not stack:
        raise InputError("3D restores the whole Z-stack: choose 'all planes'")
    if letters != "Z":
        what = f"its planes are along {letters!r}" if letters else "it has more than one axis of planes"
        raise InputError(
            f"3D restores one Z-stack, and {what}; label the depth axis 'z', or restore a series of volumes "
            "with the API (volumetric=True) or the command line (--3d)"
        )
    scale = [float(s) for s in layer.scale]
    if order is not None:
        scale = [scale[axis] for axis in order]
    return scale[0], scale[-2], scale[-1]


def _volume_note(choices: Choices, axes: str, shape, spacing) -> str:
    """What the 3D fit is, and the memory it needs, for the status line."""
    from ..axes import layout_for
    from ..engine.presets import network_for
    from ..volumes import volume_memory_bytes

    layout = layout_for(shape, axes)
    net = network_for(choices.task, choices.preset_resolved, channels=choices.channels)
    needed = volume_memory_bytes(net, layout, spacing)
    sizes = "x".join(str(layout.shape[layout.axes.index(letter)]) for letter in "ZYX")
    return f"3D fit of {sizes} voxels (spacing z {spacing[0]:g}, y {spacing[1]:g}, x {spacing[2]:g}), " \
           f"needs about {needed / 2**30:.1f} GiB"


def _plane_memory(choices: Choices, channels: int, height: int, width: int) -> str:
    """``"each plane's fit needs about 0.4 GiB"``: the engine's estimate, before the run."""
    from ..engine.presets import plane_memory_bytes

    try:
        needed = plane_memory_bytes(choices.task, choices.preset_resolved, channels, height, width,
                                    choices.factor, choices.channels)
    except Exception:  # noqa: BLE001 - an estimate must never stop a run
        return ""
    return f"the fit needs about {needed / 2**30:.1f} GiB"


def make_plan(viewer, choices: Choices) -> Plan:
    """Read the chosen layers into arrays and plain values; raise ``InputError``."""
    from ..errors import InputError

    sources = _sources(choices)
    layer = sources[0]
    if any(source.multiscale for source in sources):
        raise InputError("multiscale layers are not supported; restore a single-resolution layer")
    rgb = bool(layer.rgb)
    # The plane is what the viewer displays: other axes than the layer's last two when the
    # user has rolled or transposed the dims. The fit sees the layer's axes in that order.
    order = geo.view_order(viewer, layer)
    arrange = _arranger(geo.data_order(order, rgb))
    data = arrange(layer.data)
    shape = tuple(data.shape)
    leading = geo.leading_shape(shape, rgb)
    height, width = shape[len(leading) : len(leading) + 2]

    stack = bool(leading) and choices.planes == PLANES_ALL
    if not leading or stack:
        planes = geo.plane_indices(shape, rgb)
        out_index, out_leading, plane_offset = planes, leading, ()
    else:
        index = plane_in_view(viewer, layer, leading, order)
        planes, out_index = [index], [(0,) * len(leading)]
        out_leading, plane_offset = (1,) * len(leading), index

    mask_data, mask_per_plane = None, False
    if choices.task == "inpaint":
        mask_layer = choices.mask
        if mask_layer is None:
            raise InputError("inpainting needs a Labels layer marking the holes")
        mask_data = mask_layer.data
        if order is not None:
            if mask_data.ndim != layer.ndim:
                raise InputError(
                    f"mask {mask_layer.name!r} is one plane of the layer's last two axes, but the viewer shows "
                    f"other axes; show those again (the dims' order) or draw a mask with the image's shape"
                )
            mask_data = arrange(mask_data)
        mask_shape = tuple(mask_data.shape)
        if mask_shape == leading + (height, width) and leading:
            mask_per_plane = True
        elif mask_shape != (height, width):
            wanted = f"{(height, width)}" + (f" or {leading + (height, width)}" if leading else "")
            raise InputError(
                f"mask {mask_layer.name!r} has shape {mask_shape}; image {layer.name!r} needs {wanted}"
            )

    out_plane = geo.output_plane_shape(shape, rgb, choices.factor)
    out_shape = out_leading + out_plane
    iterations = choices.iterations
    every = min(choices.snapshot_every, iterations)
    dtype = np.dtype(data.dtype)
    if choices.keep_snapshots:
        count = geo.snapshot_count(iterations, every)
        if count * math.prod(out_shape) * dtype.itemsize * len(sources) > MAX_STACK_BYTES:
            raise InputError(
                f"keeping {count} snapshots of {out_shape} needs more than "
                f"{MAX_STACK_BYTES / 2**30:.0f} GiB; update less often or restore one plane"
            )
        out_shape = (count, *out_shape)

    reference, reference_per_plane, notes = None, False, []
    if choices.reference is not None:
        reference_data = choices.reference.data
        if order is not None and reference_data.ndim == layer.data.ndim:
            reference_data = arrange(reference_data)
        ref_shape = tuple(reference_data.shape)
        if len(sources) > 1:
            notes.append("no PSNR: the reference is one layer, the result several channels")
        elif ref_shape == out_plane:
            reference = reference_data
        elif leading and ref_shape == leading + out_plane:
            reference, reference_per_plane = reference_data, True
        else:
            notes.append(f"no PSNR: reference {choices.reference.name!r} has shape {ref_shape}, the result {out_plane}")

    labels = geo.layer_geometry(layer).axis_labels
    if order is not None:
        labels = tuple(labels[axis] for axis in order)
    letters = geo.stack_letters(labels[: len(leading)]) if stack else ""
    arrays = [arrange(source.data) for source in sources]
    fit_data, axes, api_planes = _fit_input(arrays, planes, stack, letters, rgb)
    spacing = None
    if choices.volumetric:
        # One volume: a single "plane" of the run, written into the whole output at once.
        spacing = _volume_spacing(layer, order, letters, stack)
        planes, out_index, api_planes = [()], [(slice(None),) * len(leading)], [()]
        notes.append(_volume_note(choices, axes, fit_data.shape, spacing))
    memory = "" if choices.volumetric else _plane_memory(choices, len(sources) if len(sources) > 1 else 3 if rgb else 1,
                                                         height, width)
    mask = mask_data
    if mask_data is not None and not stack and mask_per_plane:
        mask = np.asarray(mask_data[planes[0]])
    elif mask_data is not None and stack and mask_per_plane and letters is None:
        mask = np.asarray(mask_data).reshape((-1, height, width))

    parameters = {
        "iterations": iterations,
        "learning_rate": choices.learning_rate,
        "reg_noise_std": choices.reg_noise_std,
        "channels": choices.channels,
        "snapshot_every": every,
        "stopping": choices.stopping,
        "show": choices.show,
        "planes": choices.planes if leading else "single image",
        "axes": axes,
        "warm_start": choices.warm_start if stack and len(planes) > 1 else None,
    }
    if choices.volumetric:
        parameters["volumetric"] = True
        parameters["spacing"] = list(spacing)
    if len(sources) > 1:
        parameters["channels_together"] = [source.name for source in sources]
    if order is not None:
        # The plane is not the layer's last two axes: say which axes it is, and which ones
        # the planes' indices count along.
        parameters["plane_axes_of_layer"] = list(order[-2:])
        parameters["planes_along_axes_of_layer"] = list(order[:-2])
    fit_kwargs = {
        "preset": choices.preset,
        "factor": choices.factor,
        "snapshot_every": every,
        # Kept snapshots fill one slot per ``every`` iterations: no extra timed ones there.
        "snapshot_seconds": None if choices.keep_snapshots else SNAPSHOT_SECONDS,
        "iterations": iterations,
        "learning_rate": choices.learning_rate,
        "reg_noise_std": choices.reg_noise_std,
        "channels": choices.channels,
        "seed": choices.seed,
        "device": choices.device,
        "stopping": choices.stopping,
    }
    if choices.task == "inpaint":
        marks = "known" if choices.mask_marks_known else "holes"
        parameters["mask_marks"] = marks
        fit_kwargs["mask_marks"] = marks
        parameters["keep_known"] = fit_kwargs["keep_known"] = not choices.raw_output
    if choices.task == "denoise":
        parameters["noise"] = fit_kwargs["noise"] = choices.noise
        parameters["recorrupt"] = fit_kwargs["recorrupt"] = choices.recorrupt
    if choices.volumetric:
        fit_kwargs["volumetric"], fit_kwargs["spacing"] = True, spacing
    trust = _trust_layers(choices)
    if choices.runs > 1:
        parameters["runs"] = fit_kwargs["runs"] = choices.runs
    if trust:
        parameters["trust_layers"] = list(trust)
    return Plan(
        task=choices.task,
        input_layer=layer,
        input_name=layer.name,
        rgb=rgb,
        planes=planes,
        out_index=out_index,
        out_shape=out_shape,
        dtype=dtype,
        plane_offset=plane_offset,
        fit_args=(fit_data, axes, choices.task, mask, stack, choices.warm_start, api_planes),
        fit_kwargs=fit_kwargs,
        parameters=parameters,
        choices=choices,
        sources=sources,
        axes=axes,
        reference=reference,
        reference_per_plane=reference_per_plane,
        notes=notes,
        order=order,
        memory=memory,
        trust=trust,
    )


def _trust_layers(choices: Choices) -> tuple:
    """The trust layers asked for, checked: the uncertainty needs runs, the residual a denoising."""
    from ..errors import InputError

    trust = []
    if choices.uncertainty_layer:
        if choices.runs < 2 or choices.volumetric:
            raise InputError("the uncertainty layer is the spread of several runs: set Runs to 2 or more "
                             "(the 3D fit has one run)")
        trust.append("uncertainty")
    if choices.residual_layer:
        if choices.task != "denoise":
            raise InputError("the residual layer is for denoising")
        trust.append("residual")
    return tuple(trust)
