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
    factor: int | None = None
    reference: object = None
    preset: str = "auto"
    preset_resolved: str = "fast"
    device: str = "auto"
    planes: str = PLANES_IN_VIEW
    replace: bool = True
    iterations: int = 1000
    stopping: str | None = None
    learning_rate: float = 0.01
    reg_noise_std: float | None = None
    channels: int = 48
    seed: int = 0
    snapshot_every: int = 25
    show: str = SHOW_AVERAGE
    keep_snapshots: bool = False


@dataclass
class Plan:
    """Everything a run needs, read from the layers on the main thread."""

    task: str
    input_layer: object
    input_name: str
    rgb: bool
    planes: list
    out_index: list  # where plane k goes in the output array
    out_shape: tuple
    dtype: np.dtype
    geometry: geo.Geometry
    fit_args: tuple  # (data, planes, rgb, task, mask_data, mask_per_plane) for the worker
    fit_kwargs: dict
    parameters: dict
    choices: Choices
    reference: np.ndarray | None = None
    reference_per_plane: bool = False
    base_metadata: dict = field(default_factory=dict)
    #: Things the user should know that do not stop the run (shown in the status line).
    notes: list = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return self.choices.iterations

    @property
    def snapshot_every(self) -> int:
        return self.fit_kwargs["snapshot_every"]

    @property
    def keep_snapshots(self) -> bool:
        return self.choices.keep_snapshots


def plane_in_view(viewer, layer, leading) -> tuple[int, ...]:
    """Index along the layer's leading axes of the plane the viewer shows."""
    position = layer.world_to_data(viewer.dims.point[-layer.ndim :])
    return tuple(int(np.clip(np.round(position[axis]), 0, size - 1)) for axis, size in enumerate(leading))


def make_plan(viewer, choices: Choices) -> Plan:
    """Read the chosen layers into arrays and plain values; raise ``InputError``."""
    from ..errors import InputError

    layer = choices.image
    if layer is None:
        raise InputError("choose an Image layer to restore")
    if layer.multiscale:
        raise InputError("multiscale layers are not supported; restore a single-resolution layer")
    data = layer.data
    shape = tuple(data.shape)
    rgb = bool(layer.rgb)
    leading = geo.leading_shape(shape, rgb)
    height, width = shape[len(leading) : len(leading) + 2]

    if not leading or choices.planes == PLANES_ALL:
        planes = geo.plane_indices(shape, rgb)
        out_index, out_leading, plane_offset = planes, leading, ()
    else:
        index = plane_in_view(viewer, layer, leading)
        planes, out_index = [index], [(0,) * len(leading)]
        out_leading, plane_offset = (1,) * len(leading), index

    mask_data, mask_per_plane = None, False
    if choices.task == "inpaint":
        mask_layer = choices.mask
        if mask_layer is None:
            raise InputError("inpainting needs a Labels layer marking the holes")
        mask_data = mask_layer.data
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
        if count * math.prod(out_shape) * dtype.itemsize > MAX_STACK_BYTES:
            raise InputError(
                f"keeping {count} snapshots of {out_shape} needs more than "
                f"{MAX_STACK_BYTES / 2**30:.0f} GiB; update less often or restore one plane"
            )
        out_shape = (count, *out_shape)

    reference, reference_per_plane, notes = None, False, []
    if choices.reference is not None:
        ref_shape = tuple(choices.reference.data.shape)
        if ref_shape == out_plane:
            reference = choices.reference.data
        elif leading and ref_shape == leading + out_plane:
            reference, reference_per_plane = choices.reference.data, True
        else:
            notes.append(f"no PSNR: reference {choices.reference.name!r} has shape {ref_shape}, the result {out_plane}")

    parameters = {
        "iterations": iterations,
        "learning_rate": choices.learning_rate,
        "reg_noise_std": choices.reg_noise_std,
        "channels": choices.channels,
        "snapshot_every": every,
        "stopping": choices.stopping,
        "show": choices.show,
        "planes": choices.planes if leading else "single image",
    }
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
    geometry = geo.output_geometry(geo.layer_geometry(layer), factor=choices.factor, plane_offset=plane_offset)
    return Plan(
        task=choices.task,
        input_layer=layer,
        input_name=layer.name,
        rgb=rgb,
        planes=planes,
        out_index=out_index,
        out_shape=out_shape,
        dtype=dtype,
        geometry=geometry,
        fit_args=(data, planes, rgb, choices.task, mask_data, mask_per_plane),
        fit_kwargs=fit_kwargs,
        parameters=parameters,
        choices=choices,
        reference=reference,
        reference_per_plane=reference_per_plane,
        base_metadata={k: v for k, v in dict(layer.metadata).items() if k != "napari_dip"},
        notes=notes,
    )
