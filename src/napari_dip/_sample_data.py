"""Sample data for napari's File > Open Sample menu, generated offline from scikit-image.

Each function returns napari layer-data tuples. The image to restore comes last, so it is
the active layer when the sample opens and the widget's image picker selects it.
"""

from __future__ import annotations

import numpy as np

SAMPLE_SIZE = 128


def denoise_sample():
    """The camera man with Gaussian noise (sigma 25/255), and the clean original.

    The clean image is hidden; pick it as the widget's reference to see the PSNR.
    """
    from .demo import SIGMA, example_pair

    clean, noisy = example_pair(SAMPLE_SIZE, seed=0)
    return [
        (clean, {"name": "camera (clean)", "visible": False, "contrast_limits": (0.0, 1.0)}, "image"),
        (noisy, {"name": "camera (noisy)", "contrast_limits": (0.0, 1.0), "metadata": {"noise_sigma": SIGMA}}, "image"),
    ]


def hole_mask(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A uint8 mask (1 = hole) of random thick strokes, like scribbles over a photo.

    >>> mask = hole_mask((64, 64))
    >>> mask.dtype, bool(0.05 < mask.mean() < 0.4)
    (dtype('uint8'), True)
    """
    from skimage.draw import line
    from skimage.morphology import dilation, disk

    rng = np.random.default_rng(seed)
    height, width = shape
    strokes = np.zeros(shape, bool)
    for _ in range(max(4, (height * width) // 1500)):
        r0, r1 = rng.integers(0, height, 2)
        c0, c1 = rng.integers(0, width, 2)
        rows, cols = line(int(r0), int(c0), int(r1), int(c1))
        strokes[rows, cols] = True
    return dilation(strokes, disk(max(1, min(shape) // 64))).astype(np.uint8)


def inpaint_sample():
    """The camera man with scribbled-out holes, the Labels mask of the holes, and the original."""
    from .demo import example_pair

    clean, _noisy = example_pair(SAMPLE_SIZE, seed=0)
    mask = hole_mask(clean.shape, seed=1)
    damaged = np.where(mask > 0, 0.0, clean).astype(np.float32)
    return [
        (clean, {"name": "camera (original)", "visible": False, "contrast_limits": (0.0, 1.0)}, "image"),
        (damaged, {"name": "camera (holes)", "contrast_limits": (0.0, 1.0)}, "image"),
        (mask, {"name": "holes", "opacity": 0.5}, "labels"),
    ]
