"""How far the picture in one plane of a stack has moved from another plane's.

A fit from a fixed noise input (super-resolution, inpainting, denoising without
recorruption) builds its picture where that input put it. A plane warm-started from such a
fit inherits the input, so once a time-lapse has drifted a few pixels from the plane the
chain started on, the warm fits fall behind fits from scratch (BENCHMARKS.md,
*Super-resolution stacks with fast's shorter schedule*). :func:`picture_shift` measures the
drift with scikit-image's phase correlation, and how well the two planes match once
aligned, so that :mod:`napari_dip.restore` can start a drifted plane afresh while planes
that are simply different pictures (a Z-stack through changing structures) are not
mistaken for moved ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sub-pixel precision of the shift on planes without holes (a tenth of a pixel): a
#: super-resolved plane's drift is measured on its low-resolution observation and then
#: multiplied by the factor.
UPSAMPLE = 10


@dataclass(frozen=True)
class Shift:
    """The (Y, X) shift in pixels that moves one plane's picture onto another's, and the
    correlation of the two planes once aligned by it (over the pixels they share)."""

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
    masked registration). ``match`` is the Pearson correlation of the overlapping pixels
    after shifting by the whole-pixel part of the shift: near 1 for the same picture moved,
    near 0 for unrelated ones.

    >>> from skimage import data
    >>> plane = data.camera()[:128, :128].astype(np.float32)
    >>> shift = picture_shift(plane, np.roll(plane, (2, -3), axis=(0, 1)))
    >>> shift.dy, shift.dx, shift.largest, shift.match > 0.99
    (-2.0, 3.0, 3.0, True)
    """
    from skimage.registration import phase_cross_correlation  # here: importing it takes a while

    ref, mov = _grey(reference), _grey(moving)
    if ref.shape != mov.shape:
        raise ValueError(f"planes of different sizes: {ref.shape} and {mov.shape}")
    ref_mask = np.ones(ref.shape, bool) if reference_known is None else _grey(reference_known) > 0.5
    mov_mask = np.ones(mov.shape, bool) if moving_known is None else _grey(moving_known) > 0.5
    if reference_known is None and moving_known is None:
        found, _, _ = phase_cross_correlation(ref, mov, upsample_factor=UPSAMPLE)
    else:
        found = phase_cross_correlation(ref * ref_mask, mov * mov_mask, reference_mask=ref_mask, moving_mask=mov_mask)[0]
    dy, dx = float(found[0]), float(found[1])
    return Shift(dy, dx, _aligned_match(ref, mov, ref_mask, mov_mask, round(dy), round(dx)))


def _aligned_match(ref, mov, ref_mask, mov_mask, dy: int, dx: int) -> float:
    """Correlation of ``ref`` and ``mov`` moved by (dy, dx) whole pixels, over the pixels
    both observe inside their overlap; 0 where too few are left or a plane is flat there."""
    height, width = ref.shape
    if abs(dy) >= height or abs(dx) >= width:
        return 0.0
    # mov moved by (dy, dx) puts mov[y - dy, x - dx] at (y, x).
    ys, xs = slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0))
    ys_from, xs_from = slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    both = ref_mask[ys, xs] & mov_mask[ys_from, xs_from]
    if both.sum() < 16:
        return 0.0
    a, b = ref[ys, xs][both], mov[ys_from, xs_from][both]
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _grey(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane, dtype=np.float64)
    return plane.mean(axis=0) if plane.ndim == 3 else plane
