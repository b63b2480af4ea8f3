"""The thread worker's function: numpy arrays in, snapshots out. No Qt, no layers, no viewer."""

from __future__ import annotations

import numpy as np

#: What the worker yields after the last plane: ``(len(planes), DONE)``.
DONE = None


def fit_planes(data, planes, rgb, task, mask_data, mask_per_plane, fit_kwargs):
    """Restore ``data[plane]`` for each plane index in turn, yielding ``(k, snapshot)``,
    then ``(len(planes), None)`` when all are done.

    Runs in the worker thread. A user's mistake or a full device (the engine's
    ``InputError``, ``DeviceMemoryError``, a diverging fit) is yielded as
    ``(k, exception)``, so the widget can report it in one line instead of a traceback;
    anything else is a bug and propagates.
    """
    from ..restore import iter_restore

    for k, index in enumerate(planes):
        try:
            image = np.array(data[index])  # a copy: the layer's array is never written
            mask = None
            if mask_data is not None:
                mask = np.array(mask_data[index] if mask_per_plane else mask_data)
            snapshots = iter_restore(task, image, mask=mask, channel_axis=-1 if rgb else None, **fit_kwargs)
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
    # The end travels with the snapshots: Qt does not order the worker's ``finished``
    # signal after its last ``yielded`` one.
    yield len(planes), DONE
