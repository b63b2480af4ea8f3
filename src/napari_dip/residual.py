"""The residual of a denoising: observation minus restoration, in the noise model's units.

One definition for the numpy API (``denoise(..., return_residual=True)``), the command line
(``--residual``) and the widget's residual layer:

* Gaussian model: ``observation - restored``, in the image's own units;
* Poisson-Gaussian model ``var = a * (signal - offset) + b``: that difference divided by
  the model's standard deviation at the restored value,
  ``(observation - restored) / sqrt(a * (restored - offset) + b)``: unit variance wherever
  the model holds and the restoration is right, so one scale reads everywhere, dark or
  bright (the variance is floored at 1 % of its median, so that a restored value at the
  offset does not divide by zero).

For a good restoration the residual looks like structure-free noise; edges or cells in it
are signal the restoration removed, and a residual much larger (or smaller) than 1 under a
Poisson-Gaussian model says the model's ``a`` and ``b`` do not fit.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def noise_residual(image, restored, noise_record: dict | None, *, axes: str | None = None) -> np.ndarray:
    """Observation minus restoration in the noise model's units (float32, ``image``'s shape).

    ``noise_record`` is ``settings["noise"]`` of the result (its ``model``, and ``a``, ``b``
    and ``offset`` per channel in the image's units). ``axes`` (e.g. ``"ZCYX"``, ``"YXC"``)
    says where the channels are; without it a single-channel record applies everywhere and
    a per-channel one to axis 0 when its size matches, else the last axis. An RGBA image's
    alpha, which the model has no entry for, is left as the plain difference.

    >>> record = {"model": "poisson-gaussian", "a": [2.0], "b": [9.0], "offset": 0.0}
    >>> round(float(noise_residual(np.array([[120.0]]), np.array([[100.0]]), record)[0, 0]), 3)  # 20 / sqrt(209)
    1.383
    >>> float(noise_residual(np.array([[120.0]]), np.array([[100.0]]), {"model": "gaussian"})[0, 0])
    20.0
    """
    image = np.asarray(image, np.float64)
    restored = np.asarray(restored, np.float64)
    if image.shape != restored.shape:
        raise InputError(f"the restoration {restored.shape} and the image {image.shape} differ in shape")
    residual = image - restored
    if not noise_record or noise_record.get("model") != "poisson-gaussian":
        return residual.astype(np.float32)
    a = np.asarray(noise_record["a"], np.float64).reshape(-1)
    b = np.asarray(noise_record["b"], np.float64).reshape(-1)
    offset = float(noise_record.get("offset") or 0.0)
    if a.size == 1:
        variance = a[0] * (restored - offset) + b[0]
    else:
        axis = _channel_axis(image.shape, a.size, axes)
        channels = image.shape[axis]
        if channels not in (a.size, a.size + 1):
            raise InputError(f"the noise record has {a.size} channels, the image {channels} along axis {axis}")
        # An alpha channel (the last one, not in the model): variance 1, the plain difference.
        a = np.concatenate([a, np.zeros(channels - a.size)])
        b = np.concatenate([b, np.ones(channels - b.size)])
        shape = [1] * image.ndim
        shape[axis] = channels
        variance = a.reshape(shape) * (restored - offset) + b.reshape(shape)
    floor = max(float(np.median(variance)) * 1e-2, 1e-12)
    return (residual / np.sqrt(np.maximum(variance, floor))).astype(np.float32)


def _channel_axis(shape: tuple[int, ...], channels: int, axes: str | None) -> int:
    if axes is not None:
        if len(axes) != len(shape) or "C" not in axes.upper().replace("S", "C"):
            raise InputError(f"axes {axes!r} do not name a channel axis of an array of shape {shape}")
        return axes.upper().replace("S", "C").index("C")
    return 0 if shape[0] == channels else len(shape) - 1
