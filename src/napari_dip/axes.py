"""Axes of a user's array: the image plane, the channels, and the planes iterated over.

An axes string names every dimension of an array with a letter from ``TZCYX``: ``T`` time,
``Z`` depth, ``C`` channels, ``Y`` and ``X`` the image plane. tifffile's ``S`` (samples:
the colour of an RGB image, stored channels-last) is read as ``C``. Examples: ``"YX"``,
``"YXC"`` (RGB), ``"CYX"``, ``"ZYX"``, ``"TYX"``, ``"TZCYX"`` (a hyperstack).

* ``Y`` and ``X`` are the image plane and come last, in that order, optionally followed by
  ``C`` (channels-last colour, ``"YXC"``).
* ``C`` is restored jointly: one network with C output channels.
* ``T`` and ``Z`` are iterated over: each (t, z) is one plane for the 2D engine, in C order.

:func:`layout_for` gives an :class:`AxesLayout` for an array's shape; without axes it keeps
the long-standing rules for 2D arrays (grey) and ``(H, W, 3|4)`` (colour), and refuses to
guess any other 3D array: ``(5, 64, 64)`` may be five planes or five channels, and only the
user knows which.

This module uses numpy only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: The letters an axes string is made of.
AXES_LETTERS = "TZCYX"
#: Other names for them: tifffile's samples (channels-last colour).
AXES_ALIASES = {"S": "C"}
#: The axes iterated over, plane by plane.
ITERATED = "TZ"
#: A last axis of at most this many entries is read as colour (RGB, RGBA) without axes.
SMALL_COLOUR_AXIS = 4

_AMBIGUOUS_HINT = (
    'say which with axes: axes="ZYX" for a stack (Z or time, restored plane by plane), '
    'axes="CYX" for channels (restored together); on the command line --axes ZYX or --axes CYX'
)


def parse_axes(axes: str, ndim: int | None = None) -> str:
    """Check an axes string and return it in capitals with ``S`` read as ``C``.

    >>> parse_axes("zyx"), parse_axes("YXS"), parse_axes("TCZYX", 5)
    ('ZYX', 'YXC', 'TCZYX')
    """
    if not isinstance(axes, str):
        raise InputError(f"axes must be a string of letters from {AXES_LETTERS}, e.g. 'ZYX', got {axes!r}")
    letters = "".join(AXES_ALIASES.get(letter, letter) for letter in axes.upper())
    unknown = sorted({letter for letter in letters if letter not in AXES_LETTERS})
    if unknown or not letters:
        what = f"unknown letter(s) {', '.join(unknown)}" if unknown else "no letters"
        raise InputError(
            f"axes {axes!r}: {what}; use letters from {AXES_LETTERS} (T time, Z depth, C channels, "
            "Y and X the image plane; S counts as C), e.g. 'ZYX'"
        )
    repeated = sorted({letter for letter in letters if letters.count(letter) > 1})
    if repeated:
        also = " (S counts as C)" if "S" in axes.upper() and "C" in repeated else ""
        raise InputError(f"axes {axes!r}: each axis may appear once, {', '.join(repeated)} is repeated{also}")
    if "Y" not in letters or "X" not in letters:
        raise InputError(f"axes {axes!r}: Y and X (the image plane) are needed, e.g. 'ZYX'")
    if not (letters.endswith("YX") or letters.endswith("YXC")):
        raise InputError(
            f"axes {axes!r}: Y and X must be the last two axes, in that order (or followed by channels, "
            "'YXC'); move the image plane to the end, e.g. with numpy.moveaxis"
        )
    if ndim is not None and len(letters) != ndim:
        raise InputError(
            f"axes {axes!r} names {len(letters)} dimensions but the array has {ndim}; give one letter per dimension"
        )
    return letters


def layout_for(shape: tuple[int, ...], axes: str | None = None, channel_axis: int | None = None) -> AxesLayout:
    """The layout of an array of this shape, from ``axes`` or ``channel_axis`` or, for the
    unambiguous cases only, from the shape itself.

    Without either, a 2D array is grey (``"YX"``) and a 3D array whose last axis holds at
    most 4 entries while its first holds more is colour (``"YXC"``); any other array raises
    :class:`~napari_dip.errors.InputError` that asks for ``axes``. ``channel_axis`` (0 or -1)
    of a 3D array means ``"CYX"`` or ``"YXC"``; given with ``axes``, the two must agree.

    >>> layout_for((64, 64, 3)).axes, layout_for((5, 64, 64), channel_axis=0).axes
    ('YXC', 'CYX')
    >>> layout_for((5, 64, 64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_dip.errors.InputError: the array has shape (5, 64, 64): ... axes="ZYX" for a stack ...
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if axes is not None:
        letters = parse_axes(axes, ndim)
        if channel_axis is not None:
            position = letters.find("C")
            if position < 0 or not -ndim <= channel_axis < ndim or channel_axis % ndim != position:
                raise InputError(
                    f"channel_axis={channel_axis} does not agree with axes {axes!r}; give one of them"
                )
        return AxesLayout(letters, shape)
    if ndim < 2:
        raise InputError(f"expected a 2D grey image or a 3D image with channels, got shape {shape}")
    if ndim == 2:
        if channel_axis is not None:
            raise InputError(f"channel_axis={channel_axis} was given but the image is 2D, shape {shape}")
        return AxesLayout("YX", shape)
    if ndim == 3:
        if channel_axis is None:
            if shape[2] <= SMALL_COLOUR_AXIS < shape[0]:
                return AxesLayout("YXC", shape)
            raise InputError(
                f"the array has shape {shape}: its first axis may be {shape[0]} planes or {shape[0]} channels; "
                + _AMBIGUOUS_HINT
            )
        if channel_axis in (0, -3):
            return AxesLayout("CYX", shape)
        if channel_axis in (-1, 2):
            return AxesLayout("YXC", shape)
        raise InputError(f"channel_axis must be 0 (channel-first) or -1 (channels-last), got {channel_axis}")
    example = "TZYX" if ndim == 4 else "TZCYX"
    raise InputError(
        f"the array has shape {shape}: a {ndim}D array needs axes, one letter from {AXES_LETTERS} per "
        f"dimension, e.g. axes={example!r} (on the command line --axes {example}); T and Z are restored "
        "plane by plane, C together"
    )


@dataclass(frozen=True)
class AxesLayout:
    """What each axis of an array is, and how the array splits into planes for the 2D engine.

    >>> layout = layout_for((2, 3, 4, 32, 48), "TCZYX")
    >>> layout.iterated, layout.stack_shape, layout.planes, layout.plane_axes
    ('TZ', (2, 4), 8, 'CYX')
    >>> layout.plane(np.zeros(layout.shape), (1, 3)).shape, layout.output_shape(2)
    ((3, 32, 48), (2, 3, 4, 64, 96))
    """

    #: One letter per dimension, checked (:func:`parse_axes`).
    axes: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if len(self.axes) != len(self.shape):
            raise InputError(f"axes {self.axes!r} do not match shape {self.shape}")

    # -- what the axes are ---------------------------------------------------------------

    @property
    def iterated(self) -> str:
        """The letters iterated over (``"TZ"``, ``"Z"``, ``""``), in the array's order."""
        return "".join(letter for letter in self.axes if letter in ITERATED)

    @property
    def iterated_axes(self) -> tuple[int, ...]:
        return tuple(i for i, letter in enumerate(self.axes) if letter in ITERATED)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Sizes of the iterated axes: ``()`` for a single image."""
        return tuple(self.shape[i] for i in self.iterated_axes)

    @property
    def planes(self) -> int:
        return int(np.prod(self.stack_shape, dtype=np.int64))

    @property
    def is_stack(self) -> bool:
        """True when there are T or Z axes (even of size 1)."""
        return bool(self.iterated)

    @property
    def channel_axis(self) -> int | None:
        """Position of C in the whole array, ``None`` without channels."""
        position = self.axes.find("C")
        return None if position < 0 else position

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def plane_axes(self) -> str:
        """The axes one plane has: ``"YX"``, ``"CYX"`` or ``"YXC"``."""
        return "".join(letter for letter in self.axes if letter not in ITERATED)

    @property
    def plane_channel_axis(self) -> int | None:
        """The ``channel_axis`` a plane is handed to the 2D engine with: None, 0 or -1."""
        return {"YX": None, "CYX": 0, "YXC": -1}[self.plane_axes]

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return tuple(n for n, letter in zip(self.shape, self.axes) if letter not in ITERATED)

    @property
    def height(self) -> int:
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        return self.shape[self.axes.index("X")]

    def plane_name(self, index: tuple[int, ...]) -> str:
        """A plane's index in words: ``Z=3``, ``T=1 Z=2``; ``""`` for a single image.

        >>> layout_for((2, 3, 32, 32), "TZYX").plane_name((1, 2))
        'T=1 Z=2'
        """
        return " ".join(f"{letter}={i}" for letter, i in zip(self.iterated, index))

    def describe(self) -> str:
        """The layout in a few words: ``ZYX 5x64x64 (5 planes)``.

        >>> layout_for((5, 64, 64), "ZYX").describe(), layout_for((64, 64, 3)).describe()
        ('ZYX 5x64x64 (5 planes)', 'YXC 64x64x3')
        """
        sizes = "x".join(str(n) for n in self.shape)
        if not self.is_stack:
            return f"{self.axes} {sizes}"
        count = self.planes
        return f"{self.axes} {sizes} ({count} plane{'s' if count != 1 else ''})"

    # -- splitting and assembling --------------------------------------------------------

    def indices(self) -> Iterator[tuple[int, ...]]:
        """The planes' indices along the iterated axes, in C order (``()`` once for a
        single image)."""
        return iter(np.ndindex(*self.stack_shape))

    def selector(self, index: tuple[int, ...]) -> tuple:
        """The numpy index of one plane in the whole array (or in the output)."""
        index = tuple(index)
        if len(index) != len(self.iterated):
            raise ValueError(f"a plane index of {self.axes!r} has {len(self.iterated)} entries, got {index}")
        values = iter(index)
        return tuple(next(values) if letter in ITERATED else slice(None) for letter in self.axes)

    def plane(self, array, index: tuple[int, ...]) -> np.ndarray:
        """One plane of ``array`` (a view), laid out as :attr:`plane_axes` says."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"the array has shape {array.shape}, the layout {self.shape}")
        return array[self.selector(index)]

    def split(self, array) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """``(index, plane)`` for every plane, in C order."""
        for index in self.indices():
            yield index, self.plane(array, index)

    def output_shape(self, factor: int | None = None) -> tuple[int, ...]:
        """The shape of the result: Y and X enlarged by ``factor`` (super-resolution)."""
        f = factor or 1
        return tuple(n * f if letter in "YX" else n for n, letter in zip(self.shape, self.axes))

    def output_plane_shape(self, factor: int | None = None) -> tuple[int, ...]:
        f = factor or 1
        sizes = zip(self.shape, self.axes)
        return tuple(n * f if letter in "YX" else n for n, letter in sizes if letter not in ITERATED)

    def new_output(self, dtype, factor: int | None = None) -> np.ndarray:
        """An array to :meth:`put` the restored planes into."""
        return np.zeros(self.output_shape(factor), dtype)

    def put(self, output: np.ndarray, index: tuple[int, ...], plane) -> None:
        """Write a restored plane (in :attr:`plane_axes` layout) into ``output``."""
        plane = np.asarray(plane)
        target = output[self.selector(index)]
        if plane.shape != target.shape:
            raise ValueError(f"plane {tuple(index)} has shape {plane.shape}, the output expects {target.shape}")
        output[self.selector(index)] = plane

    def assemble(self, planes, dtype, factor: int | None = None) -> np.ndarray:
        """The whole result from ``(index, plane)`` pairs."""
        output = self.new_output(dtype, factor)
        for index, plane in planes:
            self.put(output, index, plane)
        return output

    def expand(self, plane) -> np.ndarray:
        """A plane with the iterated axes put back as size-1 axes: the whole result of a
        stack of one plane."""
        return np.expand_dims(np.asarray(plane), self.iterated_axes) if self.iterated_axes else np.asarray(plane)

    # -- masks ---------------------------------------------------------------------------

    def mask_kind(self, mask_shape: tuple[int, ...]) -> str:
        """How an inpainting mask of this shape applies: ``"shared"`` (one mask for every
        plane: ``(Y, X)``, or one plane's shape with channels) or ``"per plane"`` (the
        stack's shape, with or without the channel axis)."""
        mask_shape = tuple(mask_shape)
        shared = {(self.height, self.width), self.plane_shape}
        no_channels = tuple(n for n, letter in zip(self.shape, self.axes) if letter != "C")
        per_plane = {no_channels, self.shape} if self.is_stack else set()
        if mask_shape in shared and mask_shape in per_plane:
            raise InputError(
                f"the mask's shape {mask_shape} fits both one mask for all planes and one per plane of "
                f"{self.axes} {self.shape}; give a mask of the image's whole shape {self.shape}"
            )
        if mask_shape in shared:
            return "shared"
        if mask_shape in per_plane:
            return "per plane"
        accepted = [(self.height, self.width)]
        if self.channel_axis is not None:
            accepted.append(self.plane_shape)
        if self.is_stack:
            accepted += [s for s in (no_channels, self.shape) if s not in accepted]
        listed = ", ".join(str(s) for s in accepted)
        raise InputError(
            f"the mask has shape {mask_shape} but the image ({self.axes} {self.shape}) needs one of {listed}"
        )

    def mask_plane(self, mask, index: tuple[int, ...]) -> np.ndarray:
        """The mask of one plane: the mask itself when shared, else its plane ``index``."""
        mask = np.asarray(mask)
        if self.mask_kind(mask.shape) == "shared":
            return mask
        if mask.shape == self.shape:
            return mask[self.selector(index)]
        no_channels = AxesLayout(self.axes.replace("C", ""), mask.shape)
        return mask[no_channels.selector(index)]
