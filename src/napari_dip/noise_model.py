"""How a noise model enters a denoising fit, and the trust maps made from its results.

:func:`plan_noise` decides, from the ``noise=`` setting and the image itself, which model a
fit uses and makes a :class:`NoisePlan`, which then gives

* the observation the network is fitted to (:meth:`NoisePlan.fit_input`): the image as it
  is, or for ``fit="gat"`` its generalised Anscombe transform scaled to [0, 1];
* the loss (:meth:`NoisePlan.loss`): the squared error, or for ``fit="weighted"`` the
  variance-weighted one of :class:`~napari_dip.engine.losses.PoissonGaussianError`;
* the noise level the input jitter follows (:meth:`NoisePlan.jitter_sigma`): the
  stabilised noise's standard deviation in the fitted values' units;
* the way back from the fitted values to the image (:meth:`NoisePlan.to_image`, the exact
  unbiased inverse of the transform);
* the record of all of it for the settings (:meth:`NoisePlan.describe`), with ``a`` and
  ``b`` in the image's own units (detector units for raw camera data).

The engine's images are ``(C, H, W)`` in [0, 1] (:mod:`napari_dip.arrays`); a channel of
user values ``v`` is ``(v - low) / span`` there, so a model ``var(v) = A v + B`` reads
``var = (A / span) x + (A low + B) / span**2`` on the engine's scale. Every channel has its
own ``a`` and ``b``; the model (Gaussian or Poisson-Gaussian) is one for the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, InputWarning
from .noise import NOISE_FITS, NOISE_MODELS, NoiseLevels, choose_noise_model, estimate_noise_levels, gat, gat_inverse

#: The way a Poisson-Gaussian model is fitted unless ``noise_fit`` says otherwise
#: (measured against ``"weighted"`` on FMD: benchmarks/fmd.py, BENCHMARKS.md).
DEFAULT_NOISE_FIT = "gat"


@dataclass
class NoisePlan:
    """The noise model of one fit (or of every plane of a stack)."""

    kind: str  # "gaussian" or "poisson-gaussian"
    fit: str | None  # "gat" or "weighted" for Poisson-Gaussian, else None
    requested: str
    #: Per channel, on the engine's [0, 1] scale: ``var = a * x + b``.
    a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Per channel, user units per engine unit and the user value of engine 0.
    span: np.ndarray = field(default_factory=lambda: np.ones(0))
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    levels: list[NoiseLevels] = field(default_factory=list)
    gain: float | None = None
    offset: float | None = None
    choice_reason: str = ""

    @property
    def poisson(self) -> bool:
        return self.kind == "poisson-gaussian"

    # -- the transform --------------------------------------------------------------

    def _gat_bounds(self, channel: int) -> tuple[float, float]:
        # Engine values lie in [0, 1]: their transforms' range maps onto [0, 1].
        a, b = self.a[channel], self.b[channel]
        return float(gat(0.0, a, b)), float(gat(1.0, a, b))

    def fit_input(self, chw: np.ndarray) -> np.ndarray:
        """The ``(C, H, W)`` values the network is fitted to."""
        if self.fit != "gat":
            return chw
        out = np.empty_like(chw, dtype=np.float32)
        for c in range(chw.shape[0]):
            d0, d1 = self._gat_bounds(c)
            out[c] = (gat(chw[c], self.a[c], self.b[c]) - d0) / (d1 - d0)
        return out

    def to_image(self, chw: np.ndarray) -> np.ndarray:
        """Fitted values back to the engine's image scale (exact unbiased inverse)."""
        if self.fit != "gat":
            return chw
        out = np.empty(chw.shape, np.float32)
        for c in range(chw.shape[-3]):
            d0, d1 = self._gat_bounds(c)
            out[..., c, :, :] = gat_inverse(chw[..., c, :, :] * (d1 - d0) + d0, self.a[c], self.b[c])
        return out

    def jitter_sigma(self, chw: np.ndarray) -> float | None:
        """The noise level of the fitted values the input jitter follows (``None``: the
        Gaussian estimate of the image, as without a noise model)."""
        if self.fit == "gat":
            # The transform makes the noise's standard deviation 1; scaled to [0, 1].
            return float(np.mean([1.0 / (d1 - d0) for d0, d1 in map(self._gat_bounds, range(len(self.a)))]))
        if self.fit == "weighted":
            means = chw.reshape(chw.shape[0], -1).mean(axis=1)
            return float(np.sqrt(np.mean(np.maximum(self.a * means + self.b, 0.0))))
        return None

    def loss(self, observation):
        """The fit's loss for ``observation`` (the engine's ``(C, H, W)`` float array)."""
        if self.fit != "weighted":
            return None
        import torch

        from .engine.losses import PoissonGaussianError

        return PoissonGaussianError(self.a, self.b, torch.as_tensor(np.asarray(observation, np.float32)))

    # -- records ----------------------------------------------------------------------

    def describe(self) -> dict:
        record = {"requested": self.requested, "model": self.kind, "reason": self.choice_reason}
        if self.kind == "poisson-gaussian":
            record["fit"] = self.fit
        if self.levels:
            # In the image's units: var(v) = a * (v - offset) + b.
            offset = self.offset or 0.0
            record["a"] = [float(a * s) for a, s in zip(self.a, self.span)]
            record["b"] = [
                # x = (v - lo) / s: s**2 (a x + b) = a s (v - offset) + b s**2 - a s (lo - offset).
                float(b * s**2 - a * s * (lo - offset)) for a, b, s, lo in zip(self.a, self.b, self.span, self.low)
            ]
            record["a_standard_error"] = [float(lv.a_error * s) for lv, s in zip(self.levels, self.span)]
            record["offset"] = offset
            record["gain_given"] = self.gain
        return record


def plan_noise(
    chw: np.ndarray,
    low,
    high,
    *,
    noise: str = "auto",
    fit: str | None = None,
    gain: float | None = None,
    offset: float | None = None,
) -> NoisePlan:
    """The noise model for the engine-scale image ``chw`` whose channels map to user values
    ``low + x * (high - low)``; ``gain`` and ``offset`` in user (detector) units.

    ``noise="auto"`` estimates ``a`` and ``b`` and picks Poisson-Gaussian when the variance
    clearly grows with the signal (:func:`~napari_dip.noise.choose_noise_model`).
    """
    fit = fit or DEFAULT_NOISE_FIT
    if noise not in NOISE_MODELS:
        raise InputError(f"unknown noise model {noise!r}; choose one of {NOISE_MODELS}")
    if fit not in NOISE_FITS:
        raise InputError(f"unknown noise fit {fit!r}; choose one of {NOISE_FITS}")
    if gain is not None and not gain > 0:
        raise InputError(f"the gain must be positive, got {gain}")
    if offset is not None and not np.isfinite(offset):
        raise InputError(f"the offset must be a finite number, got {offset}")
    if noise == "gaussian" and gain is None and offset is None:
        return NoisePlan("gaussian", None, noise, choice_reason="requested")
    low = np.asarray(low, np.float64).reshape(-1)
    high = np.asarray(high, np.float64).reshape(-1)
    span = np.where(high > low, high - low, 1.0)
    a_list, b_list, levels = [], [], []
    for c in range(chw.shape[0]):
        offset_c = 0.0 if offset is None else (offset - low[c]) / span[c]
        gain_c = None if gain is None else gain / span[c]
        lv = estimate_noise_levels(chw[c], gain=gain_c, offset=offset_c)
        levels.append(lv)
        a_list.append(max(lv.a, 0.0))
        # Standard form on the engine scale: var = a x + (b - a * offset).
        b_list.append(lv.b - max(lv.a, 0.0) * offset_c)
    a, b = np.asarray(a_list), np.asarray(b_list)
    if noise == "auto":
        choices = [choose_noise_model(lv) for lv in levels]
        kind = "poisson-gaussian" if "poisson-gaussian" in choices else "gaussian"
        reason = "estimated: the variance grows with the signal" if kind != "gaussian" else (
            "estimated: the variance does not grow with the signal"
        )
    else:
        kind, reason = noise, "requested"
    if kind == "poisson-gaussian" and not (a > 0).all():
        if noise == "poisson-gaussian":
            raise InputError(
                "the noise of this image does not grow with its signal (estimated gain 0); "
                "use noise='gaussian', or give the gain"
            )
        kind, reason = "gaussian", "estimated gain 0 in a channel"
    _warn_about_camera_values(kind, reason, gain, offset, high)
    return NoisePlan(
        kind, fit if kind == "poisson-gaussian" else None, noise, a, b, span, low, levels, gain, offset, reason
    )


def _warn_about_camera_values(kind: str, reason: str, gain, offset, high) -> None:
    """Say when the gain or offset given cannot be doing what the user meant."""
    import warnings

    if kind == "gaussian" and (gain is not None or offset is not None):
        given = " and ".join(name for name, value in (("gain", gain), ("offset", offset)) if value is not None)
        warnings.warn(InputWarning(
            f"the {given} describe{'s' if ' and ' not in given else ''} Poisson-Gaussian noise; the noise is "
            f"taken as Gaussian ({reason}), which does not use {'it' if ' and ' not in given else 'them'}"),
            stacklevel=3)
    elif offset is not None and offset >= float(np.max(high)):
        warnings.warn(InputWarning(
            f"the offset {offset:g} is at or above the image's values (up to {float(np.max(high)):.4g}): "
            "is it in the image's own units?"), stacklevel=3)


def spread_in_user_units(run_images: np.ndarray, layout) -> np.ndarray:
    """Per-pixel standard deviation across runs, ``run_images`` ``(runs, C, H, W)`` on the
    engine scale, as float32 in the user's units and channel layout (no alpha)."""
    low = np.asarray(layout.low)
    high = np.asarray(layout.high)
    span = np.where(high > low, high - low, 0.0)[:, None, None]
    spread = np.clip(run_images.astype(np.float64), 0.0, 1.0).std(axis=0) * span
    if layout.channel_axis is None:
        return spread[0].astype(np.float32)
    if layout.channel_axis == 0:
        return spread.astype(np.float32)
    return np.moveaxis(spread, 0, 2).astype(np.float32)
