"""The thread worker's function: numpy arrays in, snapshots out. No Qt, no layers, no viewer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

#: What the worker yields after the last plane: ``(len(planes), DONE)``.
DONE = None


@dataclass(frozen=True)
class ConstantPlane:
    """Yielded instead of snapshots for a constant plane of a stack (an empty Z slice, a
    black frame): the engine refused it, and ``image`` is the plane copied through
    unchanged (enlarged by the factor for super-resolution) for the output."""

    image: np.ndarray
    message: str


@dataclass(frozen=True)
class EngineWarning:
    """An :class:`~napari_dip.errors.InputWarning` the engine gave when a plane's fit
    started (e.g. a mask that looks inverted): the fit goes on, the user should know."""

    message: str


def copy_through(image: np.ndarray, factor: int | None) -> np.ndarray:
    """A constant plane as the output shows it: unchanged, or each pixel repeated
    ``factor`` times along both image axes (exact, as every pixel has the same value).

    >>> copy_through(np.full((2, 3), 7, np.uint8), 2).shape
    (4, 6)
    """
    f = factor or 1
    if f == 1:
        return np.array(image)
    return np.repeat(np.repeat(image, f, axis=0), f, axis=1)


def fit_planes(data, planes, rgb, task, mask_data, mask_per_plane, fit_kwargs):
    """Restore ``data[plane]`` for each plane index in turn, yielding ``(k, snapshot)``,
    then ``(len(planes), None)`` when all are done.

    Runs in the worker thread. A user's mistake or a full device (the engine's
    ``InputError``, ``DeviceMemoryError``, a diverging fit) is yielded as
    ``(k, exception)``, so the widget can report it in one line instead of a traceback;
    anything else is a bug and propagates. In a stack of several planes, a constant plane
    (``ConstantImageError``) does not stop the run: it is yielded as a
    :class:`ConstantPlane` and the next plane follows. The engine's ``InputWarning``\\ s
    are yielded as :class:`EngineWarning`\\ s before the plane's snapshots.
    """
    from ..errors import ConstantImageError, InputWarning
    from ..restore import iter_restore

    for k, index in enumerate(planes):
        failure = None
        image = np.array(data[index])  # a copy: the layer's array is never written
        # Only the engine's start is watched: that is where it checks the input. The
        # record is module state, so it is kept short (other warnings are passed on).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
            try:
                mask = None
                if mask_data is not None:
                    mask = np.array(mask_data[index] if mask_per_plane else mask_data)
                snapshots = iter_restore(task, image, mask=mask, channel_axis=-1 if rgb else None, **fit_kwargs)
            except (ValueError, MemoryError, FloatingPointError) as error:
                failure = error
        for warning in caught:
            if issubclass(warning.category, InputWarning):
                yield k, EngineWarning(str(warning.message))
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if isinstance(failure, ConstantImageError) and len(planes) > 1:
            yield k, ConstantPlane(copy_through(image, fit_kwargs.get("factor")), str(failure))
            continue
        if failure is not None:
            yield k, failure
            return
        try:
            for snapshot in snapshots:
                yield k, snapshot
        except (ValueError, MemoryError, FloatingPointError) as error:
            yield k, error
            return
        finally:
            snapshots.close()
    # The end travels with the snapshots: Qt does not order the worker's ``finished``
    # signal after its last ``yielded`` one.
    yield len(planes), DONE
