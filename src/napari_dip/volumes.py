"""Volumetric restoration: a whole Z-stack fitted at once by a 3D network.

``denoise(..., volumetric=True)`` and ``inpaint(..., volumetric=True)`` come here. The
stack is read as the plane-by-plane path reads it (one value range for the stack, each
plane normalised by :func:`~napari_dip.arrays.prepare_image`, masks checked together), but
the planes are stacked along Z into one ``(C, Z, Y, X)`` observation and fitted by a
:class:`~napari_dip.engine.networks3d.VolumeSkipNet`, whose downsampling follows the voxel
``spacing`` ``(z, y, x)``. A ``T`` axis is iterated over: one volume per time point, each
fitted on its own.

Super-resolution is not offered in 3D: its forward model resamples the image plane only,
and how a microscope undersamples Z is another question; restore such stacks plane by
plane.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .arrays import keep_known_pixels, prepare_image, prepare_mask, restore_layout
from .axes import ITERATED, AxesLayout, layout_for
from .engine.fit import Fitter, Snapshot
from .engine.forward import Identity, KnownPixels
from .engine.networks import SkipNetConfig
from .engine.networks3d import VolumeNetConfig
from .errors import InputError

if TYPE_CHECKING:  # restore imports this module inside its functions: imported where it is used, as _Job is
    from .restore import Restoration

VOLUMETRIC_TASKS = ("denoise", "inpaint")


def check_volumetric(task: str, axes: str | None, shape: tuple[int, ...], channel_axis: int | None = None) -> AxesLayout:
    """The layout of a stack to restore in 3D; a clear error when there is no Z axis or
    the task has no 3D form."""
    if task not in VOLUMETRIC_TASKS:
        raise InputError(
            f"3D restoration is available for denoising and inpainting, not for {task!r}; "
            "restore the stack plane by plane (volumetric=False, no --3d)"
        )
    if axes is None:
        raise InputError(
            f"3D restoration needs axes with a Z axis, e.g. axes='ZYX' for a (Z, Y, X) stack; got shape {tuple(shape)}"
        )
    layout = layout_for(shape, axes, channel_axis)
    if "Z" not in layout.axes:
        raise InputError(
            f"3D restoration needs a Z axis, and the axes are {layout.axes!r}; "
            "give axes with Z (e.g. 'ZYX'), or restore plane by plane without volumetric/--3d"
        )
    return layout


def volume_axes(layout: AxesLayout) -> str:
    """The axes of one volume: the layout's without the axes iterated over (``T``)."""
    return "".join(letter for letter in layout.axes if letter not in ITERATED or letter == "Z")


@dataclass
class _Volume:
    """One time point's Z-stack, prepared for the engine."""

    observed: np.ndarray  # (C, Z, H, W) float32 in [0, 1]
    planes: list  # per Z: (user's plane, ImageLayout, alpha, known (1 or C, H, W) or None)

    @property
    def constant(self) -> bool:
        flat = self.observed.reshape(self.observed.shape[0], -1)
        return bool((flat.max(axis=1) == flat.min(axis=1)).all())


def iter_restore_volumes(
    task: str,
    image,
    *,
    axes: str | None = None,
    spacing: tuple[float, float, float] | None = None,
    network: SkipNetConfig | VolumeNetConfig | None = None,
    **settings,
) -> Restoration:
    """Restore a Z-stack in 3D, yielding ``(index, snapshot)`` as each volume's fit proceeds.

    ``index`` is the volume's position along the other iterated axis (``(t,)`` for
    ``"TZYX"``, ``()`` without ``T``); the snapshots' arrays are the whole volume in the
    user's layout without ``T`` (``ZYX``, ``ZCYX``, ...), dtype and value range.
    ``spacing`` ``(z, y, x)`` sets where the network downsamples
    (:func:`~napari_dip.engine.networks3d.downsampling_schedule`); ``None`` treats the
    voxels as cubes. ``network`` is the architecture (a
    :class:`~napari_dip.engine.networks.SkipNetConfig` made 3D, or a
    :class:`~napari_dip.engine.networks3d.VolumeNetConfig` used as it is); by default the
    preset's. The other settings are those of :func:`napari_dip.restore.iter_restore`.
    """
    from .restore import Restoration, _Job  # the checks and settings every restoration shares

    layout = check_volumetric(task, axes, np.shape(image), settings.get("channel_axis"))
    if spacing is not None:
        from .engine.networks3d import _check_spacing

        spacing = _check_spacing(spacing)
    if settings.get("tile_size") is not None:
        raise InputError("3D restoration fits the whole Z-stack at once: tiles are not available with it")
    given_volume_net = network if isinstance(network, VolumeNetConfig) else None
    plane_net = given_volume_net.plane if given_volume_net is not None else network
    # Checked now, before anything runs (as the plane-by-plane stream does).
    job = _Job(task, image, axes=layout.axes, network=plane_net, **settings)
    job._first = None  # the volume is prepared below, plane by plane
    if getattr(job, "noise", None) is not None and job.noise.fit == "weighted":
        raise InputError("3D restoration fits the squared error: use noise_fit='gat' (the default) with it")
    return Restoration.of(job, _fit_volumes(job, layout, spacing, given_volume_net))


def _fit_volumes(job, layout: AxesLayout, spacing, given_volume_net) -> Iterator[tuple[tuple[int, ...], Snapshot]]:
    task = job.task
    outer = [i for i, letter in enumerate(layout.iterated) if letter != "Z"]
    z_position = layout.iterated.index("Z")
    depth = layout.shape[layout.axes.index("Z")]
    outer_shape = tuple(layout.stack_shape[i] for i in outer)
    sub_axes = volume_axes(layout)
    count = int(np.prod(outer_shape, dtype=np.int64))
    for number, outer_index in enumerate(np.ndindex(*outer_shape)):
        indices = [_plane_index(outer_index, outer, z_position, z) for z in range(depth)]
        volume = _prepare_volume(job, layout, indices)
        net = given_volume_net or VolumeNetConfig.for_volume(job.net, volume.observed.shape[1:], spacing)
        description = {
            **job.description,
            "volumetric": {
                "axes": sub_axes,
                "spacing": None if spacing is None else list(spacing),
                "spacing_assumed_isotropic": spacing is None,
                "strides": [list(s) for s in net.strides],
            },
            "volume": {"index": list(outer_index), "axes": "".join(layout.iterated[i] for i in outer),
                       "number": number, "count": count},
        }
        sub_shape = tuple(n for n, letter in zip(layout.shape, layout.axes) if letter in sub_axes)
        sub_layout = AxesLayout(sub_axes, sub_shape)
        if volume.constant:
            # Nothing to fit: the volume as it is (a constant time point of a varying series).
            result = sub_layout.assemble((((z,), plane[0]) for z, plane in enumerate(volume.planes)), job.image.dtype)
            yield outer_index, Snapshot(
                iteration=0, iterations=0, loss=0.0, output=result, average=result.copy(), elapsed=0.0, done=True,
                stop_reason="constant", expected_stop=0, settings={**description, "copied": "constant"},
            )
            continue
        if task == "inpaint":
            channels = max(p[3].shape[0] for p in volume.planes)  # a plane without holes has one
            known = np.stack([np.broadcast_to(p[3], (channels, *p[3].shape[1:])) for p in volume.planes], axis=1)
            forward_model = KnownPixels(np.ascontiguousarray(known))
            description["hole_fraction"] = round(1.0 - float(known.mean()), 6)
        else:
            forward_model = Identity()
        # The noise model the stack's planes would be fitted with (a variance-stabilising
        # transform acts per value, so it carries over to a volume as it is).
        noise = getattr(job, "noise", None)  # weighted fits were refused when the stream was made
        observed = volume.observed if noise is None else noise.fit_input(volume.observed)
        fitter = Fitter(observed, forward_model, net, job.fit_config)
        keep_known = job.keep_known and task == "inpaint"
        snapshots = fitter.run(job._every(fitter.config), job.snapshot_seconds, job._take_call_start())
        try:
            for snap in snapshots:
                yield outer_index, replace(
                    snap,
                    output=_in_user_layout(snap.output, volume, sub_layout, keep_known, noise),
                    average=_in_user_layout(snap.average, volume, sub_layout, keep_known, noise),
                    settings={**description, **snap.settings} if snap.settings else {},
                )
        finally:
            snapshots.close()
        del fitter


def describe_volumes(layout: AxesLayout, spacing) -> str:
    """For the line before the fit: ``1 volume fitted in 3D (spacing z 3, y 1, x 1)``."""
    count = int(np.prod([n for n, letter in zip(layout.shape, layout.axes) if letter == "T"], dtype=np.int64))
    if spacing is None:
        voxels = "spacing unknown: cubic voxels"
    else:
        voxels = "spacing z {:g}, y {:g}, x {:g}".format(*spacing)
    return f"{count} volume{'s' if count != 1 else ''} fitted in 3D ({voxels})"


def volume_memory_bytes(plane: SkipNetConfig, layout: AxesLayout, spacing=None) -> int:
    """Estimated peak memory of one volume's fit with the 3D form of ``plane``."""
    shape = tuple(layout.shape[layout.axes.index(letter)] for letter in "ZYX")
    channels = layout.channels
    return VolumeNetConfig.for_volume(plane, shape, spacing).memory_bytes(channels, shape)


def _plane_index(outer_index, outer_positions, z_position, z) -> tuple[int, ...]:
    index = [0] * (len(outer_positions) + 1)
    for position, value in zip(outer_positions, outer_index):
        index[position] = value
    index[z_position] = z
    return tuple(index)


def _prepare_volume(job, layout: AxesLayout, indices) -> _Volume:
    observed, planes = [], []
    for index in indices:
        image = layout.plane(job.image, index)
        chw, image_layout, alpha = prepare_image(image, layout.plane_channel_axis, value_range=job.value_range)
        known = None
        if job.task == "inpaint":
            if index in job.no_holes:
                known = np.ones((1, *chw.shape[1:]), np.float32)
            else:
                mask = layout.mask_plane(job.mask, index)
                known = prepare_mask(mask, image_layout, job.mask_marks, warn_inverted=False)
        observed.append(chw)
        planes.append((image, image_layout, alpha, known))
    return _Volume(np.ascontiguousarray(np.stack(observed, axis=1)), planes)


def _in_user_layout(czyx: np.ndarray, volume: _Volume, sub_layout: AxesLayout, keep_known: bool, noise) -> np.ndarray:
    """An engine volume ``(C, Z, H, W)`` in the user's layout, dtype and range."""

    def plane(z: int) -> np.ndarray:
        original, image_layout, alpha, known = volume.planes[z]
        chw = czyx[:, z] if noise is None else noise.to_image(czyx[:, z])
        result = restore_layout(chw, image_layout, alpha)
        if keep_known:
            result = keep_known_pixels(result, original, known, image_layout)
        return result

    dtype = volume.planes[0][1].dtype
    return sub_layout.assemble((((z,), plane(z)) for z in range(czyx.shape[1])), dtype)


def restore_volumes(
    task: str, image, *, axes: str | None = None, settings_out: dict | None = None, **settings
) -> np.ndarray:
    """The whole result of :func:`iter_restore_volumes`: every volume's final snapshot put
    back in the input's layout. ``settings_out``, if given, receives the last volume's
    settings (its noise model is every volume's) and the whole array's ``axes``."""
    settings["snapshot_every"] = None
    layout = check_volumetric(task, axes, np.shape(image), settings.get("channel_axis"))
    output = np.zeros(layout.shape, np.asarray(image).dtype)
    outer_axes = [i for i, letter in enumerate(layout.axes) if letter in ITERATED and letter != "Z"]
    for index, snapshot in iter_restore_volumes(task, image, axes=axes, **settings):
        if snapshot.done:
            if settings_out is not None and snapshot.settings:
                settings_out.update(snapshot.settings, axes=layout.axes)
            selector = [slice(None)] * len(layout.axes)
            for axis, value in zip(outer_axes, index):
                selector[axis] = value
            output[tuple(selector)] = snapshot.average
    return output


__all__ = [
    "VOLUMETRIC_TASKS", "check_volumetric", "describe_volumes", "iter_restore_volumes", "restore_volumes",
    "volume_axes", "volume_memory_bytes",
]
