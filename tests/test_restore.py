import numpy as np
import pytest

from napari_dip import denoise, inpaint, iter_restore, super_resolve
from napari_dip.errors import InputError
from napari_dip.restore import last_snapshot
from tiny import TINY, smooth_image


def noisy_uint8(size=32, seed=0):
    rng = np.random.default_rng(seed)
    clean = smooth_image(size)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    return clean, (noisy * 255).round().astype(np.uint8)


def test_denoise_returns_input_dtype_and_removes_noise():
    clean, noisy = noisy_uint8(48)
    result = denoise(noisy, iterations=150, learning_rate=0.02, **TINY)
    assert result.dtype == np.uint8 and result.shape == noisy.shape

    def error(image):
        return np.mean((image / 255.0 - clean) ** 2)

    assert error(result) < 0.6 * error(noisy)


def test_denoise_multichannel_uint16_keeps_range():
    image = (smooth_image(32, channels=2) * 3000 + 500).astype(np.uint16)
    image = np.moveaxis(image, -1, 0)
    result = denoise(image, iterations=5, **TINY)
    assert result.shape == (2, 32, 32) and result.dtype == np.uint16
    assert result.min() >= image.min() and result.max() <= image.max()


def test_super_resolve_scales_the_shape():
    image = (smooth_image(16, channels=3) * 255).astype(np.uint8)
    result = super_resolve(image, 2, iterations=5, **TINY)
    assert result.shape == (32, 32, 3) and result.dtype == np.uint8


def test_super_resolve_rgba_upscales_alpha():
    image = np.concatenate([(smooth_image(16, channels=3) * 255), np.full((16, 16, 1), 200.0)], axis=-1)
    result = super_resolve(image.astype(np.uint8), 2, iterations=3, **TINY)
    assert result.shape == (32, 32, 4)
    assert (result[..., 3] == 200).all()


def test_inpaint_keeps_known_pixels_close_and_fills_holes():
    clean = smooth_image(32)
    holes = np.zeros(clean.shape, bool)
    holes[12:20, 12:20] = True
    damaged = clean.copy()
    damaged[holes] = 0
    result = inpaint(damaged, holes, iterations=200, learning_rate=0.02, **TINY)
    hole_error = np.abs(result[holes] - clean[holes]).mean()
    assert hole_error < 0.5 * np.abs(damaged[holes] - clean[holes]).mean()


def test_streaming_gives_user_layout_and_settings_at_the_end():
    _, noisy = noisy_uint8(32)
    snaps = list(iter_restore("denoise", noisy, iterations=9, snapshot_every=3, seed=7, **TINY))
    assert [s.iteration for s in snaps] == [3, 6, 9]
    assert snaps[0].average.dtype == np.uint8
    # the first snapshot says how the fit is made (for a run stopped early), later ones don't repeat it
    assert snaps[0].settings["fit"]["seed"] == 7 and snaps[1].settings == {}
    settings = snaps[-1].settings
    assert settings["task"] == "denoise" and settings["fit"]["seed"] == 7
    assert settings["input"]["dtype"] == "uint8" and "napari_dip" in settings


def test_seed_none_is_recorded():
    _, noisy = noisy_uint8(32)
    final = list(iter_restore("denoise", noisy, iterations=2, seed=None, snapshot_every=None, **TINY))[-1]
    assert isinstance(final.settings["fit"]["seed"], int)


def test_input_array_is_not_modified():
    _, noisy = noisy_uint8(32)
    holes = np.zeros(noisy.shape, bool)
    holes[:4] = True
    before, mask_before = noisy.copy(), holes.copy()
    inpaint(noisy, holes, iterations=2, **TINY)
    np.testing.assert_array_equal(noisy, before)
    np.testing.assert_array_equal(holes, mask_before)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda im: iter_restore("deblur", im), "unknown task"),
        (lambda im: iter_restore("denoise", im, mask=im), "only used for inpainting"),
        (lambda im: iter_restore("inpaint", im), "needs a mask"),
        (lambda im: iter_restore("super-resolve", im), "needs a factor"),
        (lambda im: super_resolve(im, 5), "factor"),
        (lambda im: denoise(im, preset="huge"), "unknown preset"),
        (lambda im: denoise(im, channels=0), "channels"),
        (lambda im: denoise(im[:10]), "at least"),
        (lambda im: inpaint(im, np.zeros((3, 3))), "mask has shape"),
    ],
)
def test_bad_calls_are_explained(call, message):
    _, noisy = noisy_uint8(32)
    with pytest.raises(InputError, match=message):
        call(noisy)


def test_denoising_jitter_follows_the_estimated_noise():
    rng = np.random.default_rng(3)
    clean = smooth_image(48)
    heavy = np.clip(clean + rng.normal(0, 0.15, clean.shape), 0, 1).astype(np.float32)

    def fit_settings(image, **kwargs):
        final = last_snapshot(iter_restore("denoise", image, iterations=2, snapshot_every=None, **TINY, **kwargs))
        return final.settings

    quiet = fit_settings(clean)
    noisy = fit_settings(heavy)
    assert quiet["noise_sigma_estimate"] < 0.02 < 0.1 < noisy["noise_sigma_estimate"]
    assert quiet["fit"]["reg_noise_std"] == pytest.approx(1 / 30)  # the paper's value at low noise
    assert noisy["fit"]["reg_noise_std"] == pytest.approx(noisy["noise_sigma_estimate"] / 3, rel=1e-6)
    # the caller's value wins, and other tasks keep their schedule whatever the noise
    assert fit_settings(heavy, reg_noise_std=0.01)["fit"]["reg_noise_std"] == 0.01
    sr = last_snapshot(iter_restore("super-resolve", heavy, factor=2, iterations=2, snapshot_every=None, **TINY))
    assert sr.settings["fit"]["reg_noise_std"] == pytest.approx(0.03)
