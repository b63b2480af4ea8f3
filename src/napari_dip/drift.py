"""How far the picture in one plane of a stack has moved from another plane's.

A fit from a fixed noise input (super-resolution, inpainting, denoising without
recorruption) builds its picture where that input put it. A plane warm-started from such a
fit inherits the input, so once a time-lapse has drifted a few pixels from the plane the
chain started on, the warm fits fall behind fits from scratch (BENCHMARKS.md,
*Super-resolution stacks with fast's shorter schedule*). :func:`picture_shift` measures the
drift with scikit-image's phase correlation, and how well the two planes' detail matches
once aligned, so that :mod:`napari_dip.restore` can start a drifted plane afresh while
planes that are simply different pictures (a Z-stack through changing structures) are not
mistaken for moved ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Sub-pixel precision of the shift on planes without holes (a tenth of a pixel): a
#: super-resolved plane's drift is measured on its low-resolution observation and then
#: multiplied by the factor.
UPSAMPLE = 10
#: Planes larger than this (pixels along Y or X) are averaged down in blocks before they
#: are registered: registration with holes takes about ten FFTs of twice the plane's size,
#: gigabytes at 2048². The shift is scaled back, so it is as coarse as a block there.
LARGEST_SIDE = 512
#: The detail the match compares: each plane less its Gaussian blur of this many pixels.
#: An illumination gradient the planes share correlates with itself at any shift; their
#: detail does only where it is the same picture.
DETAIL_SIGMA = 2.0


@dataclass(frozen=True)
class Shift:
    """The (Y, X) shift in pixels that moves one plane's picture onto another's, and the
    correlation of the two planes' detail once aligned by it (over the pixels they share)."""

    dy: float
    dx: float
    match: float

    @property
    def largest(self) -> float:
        """The shift along Y or X, whichever is more (pixels)."""
        return max(abs(self.dy), abs(self.dx))


def picture_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    reference_known: np.ndarray | None = None,
    moving_known: np.ndarray | None = None,
) -> Shift:
    """The shift that moves ``moving``'s picture onto ``reference``'s.

    Both are ``(C, H, W)`` or ``(H, W)`` planes of one size; channels are averaged. With
    ``*_known`` masks (1 = observed, as for inpainting; a pixel observed in most channels
    counts) only observed pixels count, and the shift is in whole pixels (scikit-image's
    masked registration). ``match`` is the Pearson correlation of the two planes' detail
    (each less its blur) over the pixels both observe, once ``moving`` is shifted: near 1
    for the same picture moved, near 0 for unrelated ones, even where both share a
    gradient of light.

    >>> from skimage import data
    >>> plane = data.camera()[:128, :128].astype(np.float32)
    >>> shift = picture_shift(plane, np.roll(plane, (2, -3), axis=(0, 1)))
    >>> shift.dy, shift.dx, shift.largest, shift.match > 0.9
    (-2.0, 3.0, 3.0, True)
    """
    from skimage.registration import phase_cross_correlation  # here: importing it takes a while

    ref, mov = _grey(reference), _grey(moving)
    if ref.shape != mov.shape:
        raise ValueError(f"planes of different sizes: {ref.shape} and {mov.shape}")
    ref_mask = np.ones(ref.shape, bool) if reference_known is None else _grey(reference_known) > 0.5
    mov_mask = np.ones(mov.shape, bool) if moving_known is None else _grey(moving_known) > 0.5
    block = math.ceil(max(ref.shape) / LARGEST_SIDE)
    if block > 1:
        ref, mov, ref_mask, mov_mask = (_block_mean(p, block) for p in (ref, mov, ref_mask, mov_mask))
        ref_mask, mov_mask = ref_mask > 0.5, mov_mask > 0.5
    masked = reference_known is not None or moving_known is not None
    if masked:
        found = phase_cross_correlation(ref * ref_mask, mov * mov_mask, reference_mask=ref_mask, moving_mask=mov_mask)[0]
    else:
        found, _, _ = phase_cross_correlation(ref, mov, upsample_factor=UPSAMPLE)
    dy, dx = float(found[0]), float(found[1])
    match = _detail_match(ref, mov, ref_mask, mov_mask, dy, dx)
    return Shift(dy * block, dx * block, match)


def _detail_match(ref, mov, ref_mask, mov_mask, dy: float, dx: float) -> float:
    """Correlation of the detail of ``ref`` and of ``mov`` moved by (dy, dx), over the
    pixels both observe away from the edges the move leaves; 0 where too few are left
    or there is no detail."""
    from scipy.ndimage import shift as move

    height, width = ref.shape
    margin_y, margin_x = math.ceil(abs(dy)) + 1, math.ceil(abs(dx)) + 1
    if 2 * margin_y >= height or 2 * margin_x >= width:
        return 0.0
    # Linear interpolation for the fraction of a pixel; the holes' mask only moves whole pixels.
    moved = move(_detail(mov, mov_mask), (dy, dx), order=1, mode="nearest")
    moved_mask = move(mov_mask.astype(np.float64), (round(dy), round(dx)), order=0, mode="constant") > 0.5
    inner = (slice(margin_y, height - margin_y), slice(margin_x, width - margin_x))
    both = (ref_mask & moved_mask)[inner]
    if both.sum() < max(16, both.size // 16):
        return 0.0
    a, b = _detail(ref, ref_mask)[inner][both], moved[inner][both]
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _detail(plane: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The plane less its blur over the observed pixels, so that holes read as neither
    dark nor detail."""
    return np.where(known, plane - observed_blur(plane, known, DETAIL_SIGMA), 0.0)


def observed_blur(plane: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``plane`` (2D) taken over its observed pixels only (``known``
    nonzero; normalised convolution): every pixel, holes included, gets the weighted mean
    of the observed pixels near it, or NaN where none is within reach.

    >>> plane, known = np.array([[1.0, 0.0, 3.0]]), np.array([[1, 0, 1]])
    >>> float(observed_blur(plane, known, 1.0)[0, 1])  # the hole: its neighbours' mean, not 0
    2.0
    """
    from scipy.ndimage import gaussian_filter

    known = np.asarray(known, dtype=np.float64)
    weight = gaussian_filter(known, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 1e-6, gaussian_filter(plane * known, sigma) / weight, np.nan)


def _block_mean(plane: np.ndarray, block: int) -> np.ndarray:
    from skimage.transform import downscale_local_mean

    return downscale_local_mean(plane.astype(np.float64), (block, block))


def _grey(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane, dtype=np.float64)
    return plane.mean(axis=0) if plane.ndim == 3 else plane
