"""Measuring how far a stack's picture has moved (napari_dip.drift)."""

import numpy as np
import pytest
from skimage import data, transform

from napari_dip.drift import picture_shift


@pytest.fixture(scope="module")
def camera():
    return data.camera().astype(np.float64) / 255.0


def test_a_moved_picture_is_found_with_its_shift_and_a_close_match(camera):
    plane = camera[100:228, 150:278]
    moved = camera[103:231, 148:276]  # the picture 3 px up and 2 px right
    shift = picture_shift(plane, moved)
    assert (shift.dy, shift.dx) == pytest.approx((3.0, -2.0), abs=0.15)
    assert shift.largest == pytest.approx(3.0, abs=0.15) and shift.match > 0.95


def test_a_sub_pixel_drift_is_measured_to_a_fraction_of_a_pixel(camera):
    # The low-resolution planes of a x4 super-resolution: a one-pixel move of the large
    # picture is a quarter of a pixel here, and the result's drift is 4x the measured one.
    large = camera[96:256, 96:256]
    small = [transform.downscale_local_mean(large[k : k + 128, k : k + 128], (4, 4)) for k in (0, 3, 8)]
    assert picture_shift(small[0], small[1]).largest * 4 == pytest.approx(3.0, abs=0.6)
    assert picture_shift(small[0], small[2]).largest * 4 == pytest.approx(8.0, abs=0.6)


def test_masked_planes_are_registered_on_their_observed_pixels_only(camera):
    rng = np.random.default_rng(0)
    plane, moved = camera[100:164, 100:164], camera[104:168, 99:163]
    known_a, known_b = rng.random(plane.shape) > 0.4, rng.random(plane.shape) > 0.4
    # Holes are zeros in the observation, as inpainting sees them, and colour channels are averaged.
    shift = picture_shift(np.stack([plane * known_a] * 3), np.stack([moved * known_b] * 3), known_a[None], known_b[None])
    assert (shift.dy, shift.dx) == (4.0, -1.0) and shift.match > 0.95


def test_unrelated_planes_match_poorly_whatever_shift_is_found(camera):
    rng = np.random.default_rng(1)
    assert abs(picture_shift(rng.random((32, 32)), rng.random((32, 32))).match) < 0.5
    assert picture_shift(camera[:128, :128], data.moon()[:128, :128] / 255.0).match < 0.5
    # A gradient of light both share correlates with itself at any shift; their detail does not.
    ramp = np.linspace(0, 1, 128)[None].repeat(128, 0)
    lit = picture_shift(0.5 * ramp + 0.5 * camera[:128, :128], 0.5 * ramp + 0.5 * data.moon()[200:328, 200:328] / 255.0)
    assert lit.largest > 3 and abs(lit.match) < 0.5
    noise = picture_shift(ramp + 0.1 * rng.standard_normal(ramp.shape), ramp + 0.1 * rng.standard_normal(ramp.shape))
    assert abs(noise.match) < 0.5


def test_a_large_plane_is_registered_on_blocks(camera, monkeypatch):
    from napari_dip import drift

    # Blocks of 2 above 64 px: the shift comes back in whole plane pixels, twice the block's.
    monkeypatch.setattr(drift, "LARGEST_SIDE", 64)
    plane, moved = camera[100:228, 100:228], camera[108:236, 96:224]
    shift = picture_shift(plane, moved)
    assert (shift.dy, shift.dx) == pytest.approx((8.0, -4.0), abs=0.3) and shift.match > 0.9
    known = np.random.default_rng(0).random(plane.shape) > 0.3
    holey = picture_shift(plane * known, moved * known, known, known)
    assert (holey.dy, holey.dx) == (8.0, -4.0)


def test_planes_of_different_sizes_are_refused(camera):
    with pytest.raises(ValueError, match="different sizes"):
        picture_shift(camera[:32, :32], camera[:32, :30])
