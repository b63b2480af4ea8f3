"""The thread worker's function: numpy arrays in, snapshots out. No Qt, no layers, no viewer."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

#: What the worker yields after the last plane: ``(len(planes), DONE)``.
DONE = None
#: How the Inpaint form chooses the mask convention (its "mask marks known pixels" box).
MASK_KNOWN_ON = "tick 'mask marks known pixels'"
MASK_KNOWN_OFF = "untick 'mask marks known pixels'"
#: The stop reasons of a plane the API copies through instead of fitting it.
COPIED = ("constant", "no holes")


@dataclass(frozen=True)
class EngineWarning:
    """An :class:`~napari_dip.errors.InputWarning` the engine gave when the fit started
    (e.g. a mask that looks inverted): the fit goes on, the user should know. ``k`` of a
    stack's warning is ``None``: the API checks a stack's masks together."""

    message: str


def is_copied(snapshot) -> bool:
    """A plane of a stack the API did not fit but copied through: constant inside a
    varying stack, or (inpainting, one mask per plane) without holes."""
    return bool(snapshot.done and snapshot.iteration == 0 and snapshot.stop_reason in COPIED)


def _start(start):
    """Call ``start()`` (which makes the API's generator, checking the input), recording
    the engine's ``InputWarning``\\ s; return ``(stream or None, failure, warnings)``."""
    from ..errors import InputWarning, InvertedMaskWarning

    stream = failure = None
    # Only the start is watched: that is where the engine checks the input. The record
    # is module state, so it is kept short (other warnings are passed on).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        try:
            stream = start()
        except (ValueError, MemoryError, FloatingPointError) as error:
            failure = error
    messages = []
    for warning in caught:
        if isinstance(warning.message, InvertedMaskWarning):  # in the form's words
            messages.append(warning.message.describe(MASK_KNOWN_ON, MASK_KNOWN_OFF))
        elif issubclass(warning.category, InputWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return stream, failure, messages


def fit(data, axes, task, mask, stack, warm_start, planes, fit_kwargs):
    """Restore ``data`` (laid out as ``axes`` says), yielding ``(k, snapshot)`` with ``k``
    the plane's position in ``planes``, then ``(len(planes), DONE)``.

    One plane goes through ``iter_restore``; a stack (``stack``) through
    ``iter_restore_planes``, warm-started plane to plane when ``warm_start``, which copies
    constant planes through itself (:func:`is_copied`). Runs in the worker thread. A
    user's mistake or a full device (the engine's ``InputError``, ``DeviceMemoryError``, a
    diverging fit) is yielded as ``(k, exception)``, so the widget can report it in one
    line instead of a traceback; anything else is a bug and propagates. The engine's
    ``InputWarning``\\ s are yielded as :class:`EngineWarning`\\ s before the snapshots.
    """
    from ..restore import iter_restore, iter_restore_planes

    fit_kwargs = dict(fit_kwargs)
    if fit_kwargs.pop("volumetric", False):
        # The whole Z-stack in one fit: one "plane" (index ``()``), the snapshots volumes.
        from ..volumes import iter_restore_volumes

        position = {tuple(plane): k for k, plane in enumerate(planes)}
        stream, failure, messages = _start(
            lambda: iter_restore_volumes(task, data, axes=axes, mask=mask, **fit_kwargs)
        )
    elif stack:
        position = {tuple(plane): k for k, plane in enumerate(planes)}
        stream, failure, messages = _start(
            lambda: iter_restore_planes(task, data, axes=axes, mask=mask, warm_start=warm_start, **fit_kwargs)
        )
    else:
        stream, failure, messages = _start(lambda: iter_restore(task, data, axes=axes, mask=mask, **fit_kwargs))
    for message in messages:
        yield (None if stack else 0), EngineWarning(message)
    if failure is not None:
        yield 0, failure
        return
    k = 0
    try:
        for item in stream:
            if stack:
                index, snapshot = item
                k = position[tuple(index)]
            else:
                snapshot = item
            yield k, snapshot
    except (ValueError, MemoryError, FloatingPointError) as error:
        yield k, error
        return
    finally:
        stream.close()
    # The end travels with the snapshots: Qt does not order the worker's ``finished``
    # signal after its last ``yielded`` one.
    yield len(planes), DONE
