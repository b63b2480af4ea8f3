"""Pure helpers between napari layers and the engine: names, shapes, transforms, metadata.

Nothing here touches Qt or a viewer, so the spatial bookkeeping (the part that is easy to
get subtly wrong) is unit-tested on plain numbers. Layer attributes are read through
:func:`layer_geometry` into a :class:`Geometry`, which the other functions transform.

Conventions
-----------
* The image plane is the last two axes of a layer, or the two before the colour axis of
  an RGB(A) layer. Every other axis (Z, time, a channel stack) is a "plane axis": the
  engine restores one plane at a time.
* napari puts pixel *centres* on integer data coordinates, so pixel ``i`` covers
  ``[i - 0.5, i + 0.5]``. After super-resolution by ``f``, output pixel ``j`` has its
  centre at input data coordinate ``(j + 0.5) / f - 0.5``: the output is drawn with
  ``scale / f`` and its origin moved by ``-0.5 + 0.5 / f`` input pixels, so both layers
  cover exactly the same area of the world.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

TASK_LABELS = {"denoise": "denoise", "super-resolve": "super-resolve", "inpaint": "inpaint"}


def preset_label(settings: dict) -> str | None:
    """What an output's name calls the settings a fit ran with (its ``settings`` record):
    the preset, and ``recorrupted`` for the paper network fitted by recorruption, which
    ``paper`` asked for by name does not do (``auto`` on CUDA does), so that the two runs'
    layers are told apart.

    >>> preset_label({"preset": "paper", "fit": {"recorrupt_sigma": 0.1}})
    'paper recorrupted'
    >>> preset_label({"preset": "paper", "fit": {"recorrupt_sigma": None}}), preset_label({"preset": "fast"})
    ('paper', 'fast')
    """
    preset = settings.get("preset")
    if preset == "paper" and (settings.get("fit") or {}).get("recorrupt_sigma") is not None:
        return f"{preset} recorrupted"
    return preset


def output_name(
    input_name: str,
    task: str,
    factor: int | None = None,
    *,
    preset: str | None = None,
    seed: int | None = None,
    taken: tuple[str, ...] | list[str] | set[str] = (),
) -> str:
    """The output layer's name: the input, the task and the settings that tell runs apart.

    ``cells [DIP denoise]``, ``cells [DIP super-resolve x4]``, with settings
    ``cells [DIP denoise fast seed 3]``; a name in ``taken`` gets ``#2``, ``#3``, ...

    >>> output_name("cells", "denoise", preset="fast", seed=3, taken={"cells [DIP denoise fast seed 3]"})
    'cells [DIP denoise fast seed 3 #2]'
    """
    label = TASK_LABELS.get(task, task)
    if task == "super-resolve" and factor:
        label = f"{label} x{factor}"
    if preset:
        label = f"{label} {preset}"
    if seed is not None:
        label = f"{label} seed {seed}"
    name = f"{input_name} [DIP {label}]"
    number = 2
    while name in taken:
        name = f"{input_name} [DIP {label} #{number}]"
        number += 1
    return name


def plane_ndim(rgb: bool) -> int:
    """Number of trailing axes that make one image handed to the engine."""
    return 3 if rgb else 2


def leading_shape(shape: tuple[int, ...], rgb: bool) -> tuple[int, ...]:
    """The plane axes (everything before the image plane)."""
    return tuple(shape[: len(shape) - plane_ndim(rgb)])


def plane_indices(shape: tuple[int, ...], rgb: bool) -> list[tuple[int, ...]]:
    """Every plane's index along the leading axes, in C order (``[()]`` for a 2D image)."""
    return [tuple(int(i) for i in index) for index in np.ndindex(*leading_shape(shape, rgb))]


def output_plane_shape(shape: tuple[int, ...], rgb: bool, factor: int | None) -> tuple[int, ...]:
    """Shape of one restored plane (``(H, W)`` or ``(H, W, C)``), enlarged by ``factor``."""
    plane = list(shape[len(shape) - plane_ndim(rgb) :])
    f = factor or 1
    plane[0] *= f
    plane[1] *= f
    return tuple(plane)


@dataclass(frozen=True)
class Geometry:
    """A layer's data-to-world transform and axis annotations, as plain values.

    ``rotate`` is ``(n, n)``, ``shear`` the ``(n, n)`` upper-triangular matrix with ones on
    the diagonal, ``affine`` the ``(n + 1, n + 1)`` homogeneous matrix applied after them.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    rotate: np.ndarray
    shear: np.ndarray
    affine: np.ndarray
    units: tuple[str, ...]
    axis_labels: tuple[str, ...]

    @property
    def ndim(self) -> int:
        return len(self.scale)

    def linear_matrix(self) -> np.ndarray:
        """Data-to-world linear part before ``affine`` (napari applies scale, shear, rotate)."""
        return self.rotate @ self.shear @ np.diag(self.scale)

    def as_layer_kwargs(self) -> dict:
        return {
            "scale": tuple(self.scale),
            "translate": tuple(self.translate),
            "rotate": np.array(self.rotate),
            "shear": np.array(self.shear),
            "affine": np.array(self.affine),
            "units": tuple(self.units),
            "axis_labels": tuple(self.axis_labels),
        }


def shear_matrix(shear, ndim: int) -> np.ndarray:
    """napari's shear (a vector of upper-triangular values, or a matrix) as a matrix."""
    values = np.asarray(shear, dtype=float)
    if values.ndim == 2:
        return values.copy()
    matrix = np.eye(ndim)
    matrix[np.triu_indices(ndim, 1)] = values
    return matrix


def layer_geometry(layer) -> Geometry:
    """Read a layer's transform and axis annotations (copies; the layer is not touched)."""
    ndim = layer.ndim
    units = getattr(layer, "units", None) or ("pixel",) * ndim
    labels = getattr(layer, "axis_labels", None) or tuple(str(i - ndim) for i in range(ndim))
    return Geometry(
        scale=tuple(float(v) for v in layer.scale),
        translate=tuple(float(v) for v in layer.translate),
        rotate=np.array(layer.rotate, dtype=float),
        shear=shear_matrix(layer.shear, ndim),
        affine=np.array(layer.affine.affine_matrix, dtype=float),
        units=tuple(str(u) for u in units),
        axis_labels=tuple(str(a) for a in labels),
    )


def input_look(layer, rgb: bool) -> dict:
    """Layer keywords that give an output its input's look: blending and opacity (with a
    channel group, the additive blending), and unless RGB its colour map, contrast and gamma."""
    look = {"blending": layer.blending, "opacity": layer.opacity}
    if not rgb:
        look.update(colormap=layer.colormap, contrast_limits=tuple(layer.contrast_limits), gamma=layer.gamma)
    return look


def input_metadata(layer) -> dict:
    """A copy of the input's metadata for its output, less the record of an earlier run
    (when the input is itself an output), which the output's own record replaces."""
    return {key: value for key, value in dict(layer.metadata).items() if key != "napari_dip"}


def output_geometry(
    geometry: Geometry,
    *,
    factor: int | None = None,
    plane_offset: tuple[int, ...] = (),
    order: tuple[int, ...] | None = None,
) -> Geometry:
    """Geometry of a restored layer so that it lies exactly over its input in the world.

    ``factor`` divides the scale of the two image axes and shifts the origin so that
    pixel edges line up (see the module docstring). ``plane_offset`` is the index of the
    first restored plane along the leading axes, for an output that holds only the plane
    in view: the output's origin moves there. ``order`` lists the layer's axes as the fit
    sees them, leading axes first and the image plane last (:func:`view_order`); ``None``:
    the layer's own order.
    """
    ndim = geometry.ndim
    # napari keeps an RGB layer's colour axis out of ``layer.ndim`` and its transforms.
    order = tuple(range(ndim)) if order is None else tuple(order)
    leading, plane = list(order[:-2]), list(order[-2:])
    f = factor or 1
    # Shift of the output's data origin, in input data coordinates.
    delta = np.zeros(ndim)
    delta[leading[: len(plane_offset)]] = plane_offset
    delta[plane] = -0.5 + 0.5 / f
    translate = np.asarray(geometry.translate) + geometry.linear_matrix() @ delta
    scale = np.asarray(geometry.scale, dtype=float)
    scale[plane] /= f
    return replace(geometry, scale=tuple(scale), translate=tuple(translate))


def view_order(viewer, layer) -> tuple[int, ...] | None:
    """The layer's axes with the two the viewer displays last (the image plane, rows then
    columns as on screen) and the others first in their own order; ``None`` when that is
    the layer's own order. In a 3D view the plane is the last two displayed axes."""
    offset = viewer.dims.ndim - layer.ndim
    shown = [axis - offset for axis in viewer.dims.order if axis >= offset]
    plane = shown[-2:]
    order = tuple([axis for axis in range(layer.ndim) if axis not in plane] + plane)
    return None if order == tuple(range(layer.ndim)) else order


def data_order(order: tuple[int, ...] | None, rgb: bool) -> tuple[int, ...] | None:
    """``order`` for the layer's data array: an RGB layer's colour axis stays last."""
    if order is None or not rgb:
        return order
    return (*order, len(order))


def inverse_order(order: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation that undoes ``order`` (for ``np.transpose``)."""
    return tuple(int(i) for i in np.argsort(order))


def with_leading_axis(geometry: Geometry, *, label: str, scale: float = 1.0, translate: float = 0.0) -> Geometry:
    """Geometry with one more axis in front (the snapshot axis of a kept-snapshots stack)."""
    n = geometry.ndim

    def embed(matrix: np.ndarray) -> np.ndarray:
        size = matrix.shape[0] + 1
        bigger = np.eye(size)
        bigger[1:, 1:] = matrix
        return bigger

    return Geometry(
        scale=(float(scale), *geometry.scale),
        translate=(float(translate), *geometry.translate),
        rotate=embed(geometry.rotate),
        shear=embed(geometry.shear),
        affine=embed(geometry.affine) if geometry.affine.shape == (n + 1, n + 1) else np.eye(n + 2),
        units=("pixel", *geometry.units),
        axis_labels=(label, *geometry.axis_labels),
    )


def snapshot_count(iterations: int, every: int) -> int:
    """Snapshots the engine yields: one every ``every`` iterations and one at the end."""
    return -(-iterations // every)


def run_metadata(
    *,
    task: str,
    preset: str,
    factor: int | None,
    parameters: dict,
    seed: int | None,
    device: str,
    iterations_run: int,
    iterations_planned: int,
    stop_reason: str,
    input_name: str,
    planes: list[tuple[int, ...]],
    version: str,
    engine_settings: dict | None = None,
    preset_requested: str | None = None,
) -> dict:
    """What goes under ``layer.metadata["napari_dip"]``: enough to redo the run.

    ``preset`` is the preset the fit used; ``preset_requested`` what the user chose
    (``"auto"`` resolves to ``"paper"`` on a CUDA GPU and ``"fast"`` otherwise).
    """
    return {
        "napari_dip": version,
        "task": task,
        "preset": preset,
        "preset_requested": preset_requested or preset,
        "factor": factor,
        "parameters": dict(parameters),
        "seed": seed,
        "device": device,
        "iterations_run": int(iterations_run),
        "iterations_planned": int(iterations_planned),
        "stop_reason": stop_reason,
        "input_layer": input_name,
        "planes": [list(p) for p in planes],
        "engine_settings": engine_settings or {},
    }


def planes_text(planes) -> str:
    """Plane indices for a message: ``2``, ``0, 3`` or ``(0, 2), (1, 2)`` for several plane axes.

    >>> planes_text([(2,)]), planes_text([(0,), (3,)]), planes_text([(0, 2), (1, 2)])
    ('2', '0, 3', '(0, 2), (1, 2)')
    """
    return ", ".join(str(p[0]) if len(p) == 1 else f"({', '.join(str(i) for i in p)})" for p in planes)


#: Axis labels read as time or depth (lower case); any other leading axis is Z or T by position.
TIME_LABELS = {"t", "time", "frame", "frames", "timepoint"}
DEPTH_LABELS = {"z", "depth", "slice", "slices", "plane", "planes"}


def stack_letters(labels) -> str | None:
    """The ``T``/``Z`` letters of a layer's leading axes, for the API's ``axes``: from the
    axis labels where they say time or depth, otherwise by position (``Z``; ``TZ`` for
    two axes, the order of ImageJ hyperstacks). ``None`` when there are more than two
    leading axes or two of the same kind: the planes are then handed over as one axis.

    >>> stack_letters(("z",)), stack_letters(("0",)), stack_letters(("t",)), stack_letters(("a", "b"))
    ('Z', 'Z', 'T', 'TZ')
    >>> stack_letters(("z", "time")), stack_letters(("z", "b")), stack_letters(("a", "b", "c"))
    ('ZT', 'ZT', None)
    """
    labels = [str(label).strip().lower() for label in labels]
    if not labels or len(labels) > 2:
        return None
    said = ["T" if label in TIME_LABELS else "Z" if label in DEPTH_LABELS else "" for label in labels]
    if len(labels) == 1:
        return said[0] or "Z"
    if not any(said):
        return "TZ"
    if said[0] and said[1]:
        return "".join(said) if said[0] != said[1] else None
    known = said[0] or said[1]
    other = "Z" if known == "T" else "T"
    return "".join(letter or other for letter in said)
