"""The Gaussian noise estimate (restore.estimate_noise) on clipped and unclipped images."""

import numpy as np
import pytest
from skimage.restoration import estimate_sigma

from napari_dip.restore import estimate_noise


def _clipped_photo(sigma: float, seed: int = 0, size: int = 256) -> np.ndarray:
    """An 8-bit-like image whose dark and bright thirds saturate under noise of ``sigma``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    clean = 0.3 + 0.4 * np.sin(3 * x) * np.cos(2 * y)
    clean[:, : size // 3] = 0.02  # black
    clean[:, 2 * size // 3:] = 0.98  # white
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1)
    return np.round(noisy * 255) / 255


@pytest.mark.parametrize("sigma", [25 / 255, 50 / 255])
def test_clipping_does_not_hide_the_noise(sigma):
    image = _clipped_photo(sigma)
    whole = float(estimate_sigma(image))
    assert whole < 0.85 * sigma  # what the plain wavelet estimate sees: too little
    assert estimate_noise(image[None]) == pytest.approx(sigma, rel=0.08)


def test_unclipped_images_keep_the_plain_wavelet_estimate():
    rng = np.random.default_rng(1)
    image = 0.5 + 0.2 * np.sin(np.linspace(0, 6, 128))[None, :] + rng.normal(0, 0.05, (128, 128))
    assert estimate_noise(image[None]) == pytest.approx(float(estimate_sigma(image)), rel=1e-12)
    # Colour: each channel on its own, then the mean; a clipped channel is corrected alone.
    clipped = _clipped_photo(50 / 255, size=128)
    both = np.stack([image, clipped])
    assert estimate_noise(both) == pytest.approx((estimate_noise(image[None]) + estimate_noise(clipped[None])) / 2)


def test_too_little_unclipped_room_keeps_the_whole_image_estimate():
    # Almost all black: the few mid-grey pixels are not enough to measure on.
    rng = np.random.default_rng(2)
    clean = np.zeros((64, 64))
    clean[30:34, 30:34] = 0.5
    image = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    assert estimate_noise(image[None]) == pytest.approx(float(estimate_sigma(image)), rel=1e-12)
