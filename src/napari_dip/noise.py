"""Noise models for photon-limited images: estimation, choice, and variance stabilisation.

Fluorescence images are photon-limited: a pixel's variance grows with its signal,
``var(z) = a * signal + b`` (Poisson-Gaussian; ``a`` is the gain, ``b`` the read-out noise
variance, both in the image's own units). Additive Gaussian noise is the case ``a = 0``.

* :func:`estimate_noise_levels` measures ``a`` and ``b`` from one image (no clean reference):
  the variance of fine-scale detail coefficients against the local mean, over intensity bins,
  robust to edges (median absolute deviation) and to clipped pixels, then a weighted
  straight-line fit (the idea of Foi et al., IEEE TIP 2008, written here from scratch).
* :func:`choose_noise_model` turns the estimate into a decision for ``noise="auto"``, by a
  second fit on the smoothest quarter of each intensity bin, where texture cannot imitate
  signal-dependent noise.
* :func:`gat` and :func:`gat_inverse` are the generalised Anscombe transform and its exact
  unbiased inverse (Makitalo & Foi, IEEE TIP 2013, closed-form approximation): after
  :func:`gat` the noise is close to Gaussian with unit variance, and :func:`gat_inverse`
  maps a denoised value back without the bias of the algebraic inverse at low counts.

Everything here is numpy; the units are whatever the caller's array uses (detector units,
or the engine's [0, 1] scale: ``a`` scales with the range, ``b`` with its square).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from .errors import InputError

NOISE_MODELS = ("auto", "gaussian", "poisson-gaussian")
#: How a Poisson-Gaussian model enters the fit: ``"gat"`` fits in the variance-stabilised
#: space and maps back with the exact unbiased inverse; ``"weighted"`` fits the raw
#: observation with a variance-weighted squared error (:mod:`napari_dip.engine.losses`).
NOISE_FITS = ("gat", "weighted")

#: ``auto`` picks Poisson-Gaussian when the fitted variance at the bright end of the image
#: (the :data:`BRIGHT_QUANTILE` of its local means) is at least this many times that at the
#: dark end (5th percentile), and the slope ``a`` is this many standard errors above zero.
AUTO_VARIANCE_RATIO = 1.5
AUTO_SLOPE_SIGNIFICANCE = 4.0
#: The bright end of an image's intensities for ``auto``: the 99th percentile, not the 95th,
#: because in sparse fluorescence images (bright cells on a dark background) fewer than 5 %
#: of the pixels carry the signal, and at the 95th percentile the variance had not grown yet
#: (a 2048² synthetic image with a = 1.1, b = 384 was taken for Gaussian).
BRIGHT_QUANTILE = 0.99
#: ``auto`` decides on a second fit that takes in each intensity bin only this fraction of
#: the blocks, the smoothest by the variation of the surrounding block means: texture in
#: bright regions (coins, coffee beans) raises the detail coefficients' spread with the
#: intensity and looks like signal-dependent noise (``coins`` at sigma 10 gave a = 0.8 with
#: all blocks; it is still taken for Poisson-Gaussian at sigma 10, not at 25 or 50). The
#: recorded ``a`` and ``b`` come from all blocks, the more precise fit on smooth signals.
SMOOTHEST_FRACTION = 0.25

_MAD_TO_SIGMA = 1.4826
#: An intensity bin with more of its blocks touching a clipped pixel is left out.
MAX_CLIPPED_FRACTION = 0.01


@dataclass(frozen=True)
class NoiseLevels:
    """``var(z) = a * z_mean + b`` fitted on one image, and how well it is determined."""

    a: float
    b: float
    #: Standard error of ``a`` from the weighted fit (0 when ``a`` was given).
    a_error: float
    #: Local-mean intensities (5th percentile and :data:`BRIGHT_QUANTILE`) the fit is valid over.
    low: float
    high: float
    #: Intensity bins the fit used.
    bins: int
    #: The same fit on the smoothest quarter of each bin's blocks (``None`` when ``a`` was
    #: given): what ``noise="auto"`` decides by (:func:`choose_noise_model`).
    smooth: NoiseLevels | None = None

    def variance(self, signal):
        return self.a * np.asarray(signal, np.float64) + self.b

    def to_dict(self) -> dict:
        return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in asdict(self).items()}


def _detail_and_mean(image: np.ndarray, clipped: np.ndarray):
    """Diagonal Haar detail of 2x2 blocks (unit norm: its variance is the pixel variance
    for white noise; constants and ramps along either axis cancel), and the mean of the
    surrounding 6x6 pixels as the block's signal, for the blocks at all four offsets (four
    times the coefficients of one grid, for a tighter estimate). Also whether a block
    touches a clipped pixel, and the variance of the 3x3 block means around it (texture:
    the block means are orthogonal to the diagonal detail, so choosing blocks by it does
    not bias the noise estimate of white noise). Returns flat arrays."""
    details, means, hits, textures = [], [], [], []
    for dy in (0, 1):
        for dx in (0, 1):
            shifted = image[dy:, dx:]
            height, width = (s - s % 2 for s in shifted.shape)
            z = shifted[:height, :width]
            p00, p01, p10, p11 = z[0::2, 0::2], z[0::2, 1::2], z[1::2, 0::2], z[1::2, 1::2]
            block_mean = (p00 + p01 + p10 + p11) / 4.0
            # 3x3 blocks around each one (edges replicated): a 6x6 local mean with little noise.
            padded = np.pad(block_mean, 1, mode="edge")
            rows, cols = block_mean.shape
            local = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9
            local_square = sum(padded[i : i + rows, j : j + cols] ** 2 for i in range(3) for j in range(3)) / 9
            textures.append(np.maximum(local_square - local**2, 0.0).ravel())
            m = clipped[dy:, dx:][:height, :width]
            hit = m[0::2, 0::2] | m[0::2, 1::2] | m[1::2, 0::2] | m[1::2, 1::2]
            details.append(((p00 - p01 - p10 + p11) / 2.0).ravel())
            means.append(local.ravel())
            hits.append(hit.ravel())
    return np.concatenate(details), np.concatenate(means), np.concatenate(hits), np.concatenate(textures)


def estimate_noise_levels(
    image,
    *,
    gain: float | None = None,
    offset: float = 0.0,
    bins: int = 24,
    clip_levels: tuple[float | None, float | None] | None = None,
) -> NoiseLevels:
    """Fit ``var = a * (signal - offset) + b`` to one 2D image (or ``(C, H, W)``, pooled).

    ``gain`` fixes ``a`` (only ``b`` is fitted); ``offset`` is the camera's baseline, so
    that ``b`` is the read-out variance. ``clip_levels`` ``(low, high)`` are values the
    sensor or the file clips at (e.g. 0 and 255 for 8-bit); blocks touching them are left
    out, because clipping lowers the variance there. ``None`` uses the image's own extremes
    when more than 0.1 % of the pixels sit on them, unless that leaves too few intensity
    bins to show the noise growing with the signal and the extreme does not pile up like a
    clipping level (a floor of true zero counts in a dark photon-counting image;
    :data:`FEW_BINS`, :func:`_pile_up`).

    >>> rng = np.random.default_rng(0)
    >>> signal = np.tile(np.linspace(10, 200, 256), (256, 1))
    >>> noisy = 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 10.0, signal.shape)
    >>> levels = estimate_noise_levels(noisy)
    >>> round(levels.a, 1), round(levels.b / 100, 1)
    (2.0, 1.0)
    """
    values = np.asarray(image, np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise InputError(f"the noise estimate needs a 2D image or (C, H, W), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise InputError("the image contains NaN or infinite values; replace them before estimating its noise")
    grid = _value_grid(values)
    if grid is not None:
        # Counts scaled to other units (8-bit data / 255 in float32, as the engine holds
        # it): estimated on the counts themselves, where equal block means are exactly
        # equal. Float rounding otherwise splits them across the equal-count bins' edges,
        # and on a dark, coarsely quantised FMD crop that dropped the darkest bin and
        # gave a = 5.84, b = -57.6 for 8-bit values where the counts give 3.71, -12.3
        # (against the 50-frame mean: 4.0, -12.9).
        origin, step = grid
        counts = estimate_noise_levels(
            np.round((values - origin) / step), gain=None if gain is None else gain / step,
            offset=(offset - origin) / step, bins=bins,
            clip_levels=None if clip_levels is None else tuple(None if c is None else (c - origin) / step
                                                               for c in clip_levels),
        )
        return _scaled(counts, step)
    values = values - offset
    if clip_levels is not None:
        return _fit_levels(values, tuple(None if c is None else c - offset for c in clip_levels), gain, bins)
    # The image's own extremes, where many pixels sit on them (clipping lowers the variance
    # there, so blocks touching them are left out) ...
    extremes = tuple(
        level if np.count_nonzero(values == level) > CLIP_MIN_FRACTION * values.size else None
        for level in (values.min(), values.max())
    )
    levels = _fit_levels(values, extremes, gain, bins)
    if levels.bins >= FEW_BINS or choose_noise_model(levels) == "poisson-gaussian":
        return levels
    # ... unless that leaves too little of the image to show how the noise grows with the
    # signal, and an extreme is a floor of true counts rather than a clipping level: then
    # it stays in. (Only then: dark bins full of zero counts bias the robust variance low,
    # and a stack's pooled estimate that decided well without them got worse with them:
    # a = 5.47 instead of 4.28 for a true 4.25.)
    clipped = tuple(level if level is not None and _pile_up(values, level, low_end) else None
                    for level, low_end in zip(extremes, (True, False)))
    if clipped == extremes:
        return levels
    return _fit_levels(values, clipped, gain, bins)


def _fit_levels(values: np.ndarray, clip_levels: tuple, gain: float | None, bins: int) -> NoiseLevels:
    """:func:`estimate_noise_levels` on ``values`` (``(C, H, W)``, offset removed), with the
    blocks touching the ``(low, high)`` clipping levels (``None``: none) left out."""
    details, means, hits, textures = [], [], [], []
    for plane in values:
        clipped = np.zeros(plane.shape, bool)
        if clip_levels[0] is not None:
            clipped |= plane <= clip_levels[0]
        if clip_levels[1] is not None:
            clipped |= plane >= clip_levels[1]
        d, m, h, t = _detail_and_mean(plane, clipped)
        details.append(d)
        means.append(m)
        hits.append(h)
        textures.append(t)
    detail, mean, hit, texture = map(np.concatenate, (details, means, hits, textures))
    if detail.size < 64:
        raise InputError("the image is too small to estimate its noise (at least 16x16 pixels are needed)")

    mean_kept = mean[~hit] if (~hit).any() else mean
    low, high = np.quantile(mean_kept, [0.05, BRIGHT_QUANTILE])
    if gain is None:
        # The decision's own fit, on the smoothest quarter of each bin (see SMOOTHEST_FRACTION).
        smooth = _levels(detail, mean, hit, texture <= _bin_quantiles(texture, mean, hit, bins), bins, None, low, high)
    else:
        smooth = None
    levels = _levels(detail, mean, hit, np.ones(mean.shape, bool), bins, gain, low, high)
    return replace(levels, smooth=smooth)


#: An end of the image's range with more than this fraction of the pixels on it is taken
#: for a clipping level ...
CLIP_MIN_FRACTION = 1e-3
#: ... unless leaving out the blocks that touch it keeps fewer intensity bins than this,
#: too few to show the noise growing with the signal, and it does not pile up
#: (:func:`_pile_up`): then it is taken for a floor of true counts.
#: A simulated dark photon-counting FMD frame (19 % zero counts) kept 3-4 bins with its
#: zeros left out, and was taken for Gaussian (BENCHMARKS.md, "A dark photon-counting
#: frame taken for Gaussian"); the real FMD crops keep 8 or more, and keep their estimate.
FEW_BINS = 6
#: Clipping piles the whole tail beyond the level onto it: at least this many times as
#: many pixels as on the next value inside. The floors of the wide-field FMD crops hold
#: 3.2-4.4 times as many, 8-bit photographs with Gaussian noise far more; the simulated
#: frame's zeros 0.7 times as many as its next value.
CLIP_PILE_UP = 2.0


def _pile_up(values: np.ndarray, level: float, low_end: bool) -> bool:
    """Whether the pixels on ``level``, the image's minimum (``low_end``) or maximum, pile
    up like a clipping level's: at least :data:`CLIP_PILE_UP` times as many as on the next
    value inside the range."""
    inside = values[values > level] if low_end else values[values < level]
    if inside.size == 0:
        return True
    nearest = inside.min() if low_end else inside.max()
    return bool(np.count_nonzero(values == level) >= CLIP_PILE_UP * np.count_nonzero(inside == nearest))


def _value_grid(values: np.ndarray) -> tuple[float, float] | None:
    """``(origin, step)`` where ``values`` are integer counts scaled and shifted (every value
    within 5 % of a step of ``origin + k * step``, at most 65536 levels) and not already
    whole numbers; else ``None``."""
    distinct = np.unique(values)
    if len(distinct) < 2 or len(distinct) > 65536 or np.array_equal(distinct, np.round(distinct)):
        return None
    step = float(np.diff(distinct).min())
    levels = (distinct - distinct[0]) / step
    if not step > 0 or np.abs(levels - np.round(levels)).max() > 0.05:
        return None
    return float(distinct[0]), step


def _scaled(levels: NoiseLevels, step: float) -> NoiseLevels:
    """Levels estimated on counts, in the units where one count is ``step``."""
    return replace(levels, a=levels.a * step, b=levels.b * step**2, a_error=levels.a_error * step,
                   low=levels.low * step, high=levels.high * step,
                   smooth=None if levels.smooth is None else _scaled(levels.smooth, step))


def _bin_quantiles(texture, mean, hit, bins):
    """Per block, the :data:`SMOOTHEST_FRACTION` quantile of the texture in its intensity bin."""
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    limit = np.full(mean.shape, np.inf)
    for k in range(len(edges) - 1):
        inside = (which == k) & ~hit
        if inside.any():
            limit[which == k] = np.quantile(texture[inside], SMOOTHEST_FRACTION)
    return limit


def _levels(detail, mean, hit, chosen, bins, gain, low, high) -> NoiseLevels:
    """The straight-line fit over intensity bins, on the ``chosen`` blocks."""
    # Equal-count intensity bins; in each, a robust variance of the detail coefficients
    # (edges and texture are outliers there, the median ignores them).
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    centres, variances, counts = [], [], []
    for k in range(len(edges) - 1):
        inside = which == k
        # Near a clipping level the variance is lowered, and leaving out the blocks that
        # touch clipped pixels would keep the ones whose noise happened to point away
        # from it (lower still): a bin with more than a few such blocks is dropped.
        if hit[inside].mean() > MAX_CLIPPED_FRACTION:
            continue
        inside &= ~hit & chosen
        n = int(inside.sum())
        if n < 16:
            continue
        d = detail[inside]
        sigma = _MAD_TO_SIGMA * np.median(np.abs(d - np.median(d)))
        centres.append(mean[inside].mean())
        variances.append(sigma**2)
        counts.append(n)
    centres, variances, counts = map(np.asarray, (centres, variances, counts))
    if len(centres) == 0 or not np.any(variances > 0):
        return NoiseLevels(0.0 if gain is None else float(gain), 0.0, 0.0, float(mean.min()), float(mean.max()), 0)
    a, b, a_error = _weighted_line(centres, variances, counts, gain)
    return NoiseLevels(float(a), float(b), float(a_error), float(low), float(high), int(len(centres)))


def _weighted_line(x, v, n, gain):
    """Straight line through ``(x, v)``: the variance of a MAD estimate from ``n`` values
    is about ``2.7 v**2 / n``, so weights ``n / v**2``, refined twice with the fitted
    variances; bins far off the line (texture the median did not remove) are dropped, and
    so are bins without measurable variance (a clean, quantised image)."""
    positive = v > 0
    if positive.sum() < 2:
        a = 0.0 if gain is None else float(gain)
        return a, float(np.median(v[positive])) if positive.any() else 0.0, 0.0
    x, v, n = x[positive], v[positive], n[positive]
    floor = 1e-3 * float(np.median(v))
    keep = np.ones(len(x), bool)
    fitted = v.copy()
    a, b, a_error = 0.0, float(np.median(v)), 0.0
    for _ in range(3):
        w = n[keep] / np.maximum(fitted[keep], floor) ** 2
        w = w / w.max()  # only relative weights matter; keeps the sums finite
        if gain is None and keep.sum() >= 2 and np.ptp(x[keep]) > 0:
            design = np.stack([x[keep], np.ones(keep.sum())], axis=1)
            normal = design.T @ (design * w[:, None])
            try:
                a, b = np.linalg.solve(normal, design.T @ (w * v[keep]))
                # Standard error of a: the weights are relative, so scale the covariance by
                # the weighted residual variance (at least the MAD estimates' own).
                residual = v[keep] - (a * x[keep] + b)
                dof = max(int(keep.sum()) - 2, 1)
                scale = max(float(np.sum(w * residual**2)) / dof,
                            float(np.sum(w * 2.7 * np.maximum(a * x[keep] + b, floor) ** 2 / n[keep])) / keep.sum())
                a_error = math.sqrt(max(np.linalg.inv(normal)[0, 0] * scale, 0.0))
            except np.linalg.LinAlgError:
                a, b, a_error = 0.0, float(np.average(v[keep], weights=w)), 0.0
        else:
            a = 0.0 if gain is None else float(gain)
            b = float(np.sum(w * (v[keep] - a * x[keep])) / np.sum(w))
        fitted = np.maximum(a * x + b, floor)
        # Relative residual in standard errors of each bin's estimate.
        z = (v - fitted) / (fitted * np.sqrt(2.7 / n))
        keep = np.abs(z) < max(4.0, np.quantile(np.abs(z), 0.8))
        if keep.sum() < 2:
            keep = np.ones(len(x), bool)
    return float(a), float(b), float(a_error)


def choose_noise_model(levels: NoiseLevels) -> str:
    """``"poisson-gaussian"`` when the variance clearly grows with the signal over the
    image's intensities (see :data:`AUTO_VARIANCE_RATIO`), else ``"gaussian"``.

    >>> choose_noise_model(NoiseLevels(0.01, 1e-4, 1e-4, 0.1, 0.8, 20))
    'poisson-gaussian'
    >>> choose_noise_model(NoiseLevels(1e-5, 0.01, 1e-4, 0.1, 0.8, 20))
    'gaussian'
    """
    if levels.smooth is not None:
        levels = levels.smooth
    if levels.a <= 0 or levels.bins < 3:
        return "gaussian"
    if levels.a_error > 0 and levels.a < AUTO_SLOPE_SIGNIFICANCE * levels.a_error:
        return "gaussian"
    dark = max(levels.a * levels.low + levels.b, 1e-30)
    bright = levels.a * levels.high + levels.b
    return "poisson-gaussian" if bright >= AUTO_VARIANCE_RATIO * dark else "gaussian"


def check_noise_model(noise: str, fit: str = "gat") -> None:
    if noise not in NOISE_MODELS:
        raise InputError(f"unknown noise model {noise!r}; choose one of {NOISE_MODELS}")
    if fit not in NOISE_FITS:
        raise InputError(f"unknown noise fit {fit!r}; choose one of {NOISE_FITS}")


# -- the generalised Anscombe transform ------------------------------------------------


def gat(z, a: float, b: float) -> np.ndarray:
    """Generalised Anscombe transform ``2 * sqrt(z / a + 3/8 + b / a**2)`` (clamped at 0
    inside the root): Poisson-Gaussian noise with ``var = a * signal + b`` becomes about
    Gaussian with unit variance.

    >>> float(gat(np.array(0.0), 1.0, 0.0)) == 2 * math.sqrt(3 / 8)
    True
    """
    if not a > 0:
        raise InputError(f"the Anscombe transform needs a positive gain a, got {a}")
    z = np.asarray(z, np.float64)
    return 2.0 * np.sqrt(np.maximum(z / a + 0.375 + b / a**2, 0.0))


#: Below this transformed value the unbiased inverse is zero counts (it is the transform
#: of zero counts without read noise).
_GAT_FLOOR = 2.0 * math.sqrt(0.375)


def gat_inverse(d, a: float, b: float) -> np.ndarray:
    """Exact unbiased inverse of :func:`gat` (Makitalo & Foi 2013, closed form):
    ``E[gat(z)] = d`` is mapped to the signal ``a * I(d)`` with

    ``I(d) = d**2/4 + sqrt(3/2)/(4 d) - 11/(8 d**2) + 5 sqrt(3/2)/(8 d**3) - 1/8 - b/a**2``.

    The Poisson part of ``I`` is kept at 0 or more (no negative photon counts), so the
    result is never below ``-b / a`` (where the model's variance would be negative).
    """
    if not a > 0:
        raise InputError(f"the Anscombe transform needs a positive gain a, got {a}")
    d = np.asarray(d, np.float64)
    safe = np.maximum(d, _GAT_FLOOR)
    root = math.sqrt(1.5)
    counts = safe**2 / 4 + root / (4 * safe) - 11 / (8 * safe**2) + 5 * root / (8 * safe**3) - 0.125
    counts = np.where(d < _GAT_FLOOR, 0.0, np.maximum(counts, 0.0))
    return a * (counts - b / a**2)


def gat_inverse_algebraic(d, a: float, b: float) -> np.ndarray:
    """The algebraic inverse of :func:`gat` (biased at low counts; for comparison)."""
    d = np.asarray(d, np.float64)
    return a * (d**2 / 4 - 0.375 - b / a**2)
