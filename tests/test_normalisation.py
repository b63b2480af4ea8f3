"""Percentile normalisation with head-room (issue 11): outliers do not squeeze the signal,
nothing is clipped on the way in, and results go back to the image's units and dtype."""

import numpy as np
import pytest

from napari_dip.arrays import HEADROOM, prepare_image, restore_layout, value_range


def camera_image(seed=0, shape=(64, 64)):
    """A 12-bit-like camera image: offset 100, signal up to a few hundred counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    signal = 300 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / (2 * 12.0**2))
    return np.round(100 + signal + rng.normal(0, 5, shape)).clip(0, 65535).astype(np.uint16)


def test_percentiles_land_inside_the_sigmoid_range_with_head_room():
    image = camera_image()
    chw, layout, _ = prepare_image(image)
    lo, hi = np.percentile(image.astype(float), [0.1, 99.9])
    span = layout.high[0] - layout.low[0]
    assert (lo - layout.low[0]) / span == pytest.approx(HEADROOM)
    assert (hi - layout.low[0]) / span == pytest.approx(1 - HEADROOM)
    # Every pixel of this image lies within [0, 1] on the engine's scale, away from its ends.
    assert chw.min() > 0.05 and chw.max() < 0.95


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_hot_pixels_do_not_compress_the_signal(dtype):
    clean = camera_image().astype(dtype)
    hot = clean.copy()
    hot[3, 5] = 65535  # a saturated hot pixel
    hot[40, 7] = 60000
    chw_clean, _, _ = prepare_image(clean)
    chw_hot, layout, _ = prepare_image(hot)
    signal = np.ones(clean.shape, bool)
    signal[3, 5] = signal[40, 7] = False
    # The signal keeps (nearly) the whole range it had: with [min, max] it would shrink to
    # about 0.6 % of it (400 of 65535 counts).
    spread_clean = np.ptp(chw_clean[0][signal])
    spread_hot = np.ptp(chw_hot[0][signal])
    assert spread_hot > 0.95 * spread_clean > 0.5
    # Nothing is clipped on the way in: the hot pixel lies far above 1, as it is.
    assert chw_hot[0, 3, 5] > 10
    # ... and comes back exactly, as does every other pixel.
    back = restore_layout(chw_hot, layout)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back.astype(float), hot.astype(float), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize(
    "image",
    [
        camera_image(1),
        (camera_image(2).astype(np.float32) - 250.0) * 0.01,  # float with negative values
        np.stack([camera_image(3), camera_image(4) * 10]).astype(np.uint16),
    ],
)
def test_round_trip_is_exact_in_units_and_dtype(image):
    kw = {"channel_axis": 0} if image.ndim == 3 else {}
    chw, layout, alpha = prepare_image(image, **kw)
    back = restore_layout(chw, layout, alpha)
    assert back.dtype == image.dtype and back.shape == image.shape
    if image.dtype.kind == "u":
        np.testing.assert_array_equal(back, image)
    else:
        np.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-5 * float(np.ptp(image)))


def test_results_stay_within_the_image_own_range():
    image = camera_image()
    chw, layout, _ = prepare_image(image)
    # The sigmoid's whole range, 0 to 1, is wider than the image's (the head-room): a result
    # spanning all of it is kept within the image's own extremes.
    sweep = np.linspace(0, 1, chw.size, dtype=np.float32).reshape(chw.shape)
    result = restore_layout(sweep, layout)
    assert result.min() == image.min() and result.max() == image.max()


def test_uint8_and_unit_floats_are_scaled_as_before():
    image = (np.arange(64 * 64) % 200 + 20).reshape(64, 64).astype(np.uint8)
    _, layout, _ = prepare_image(image)
    assert layout.low == (0.0,) and layout.high == (255.0,) and layout.limits == ((0.0, 1.0),)
    unit = np.linspace(0.2, 0.7, 64 * 64, dtype=np.float32).reshape(64, 64)
    chw, layout, _ = prepare_image(unit)
    np.testing.assert_array_equal(chw[0], unit)
    assert layout.limits == ((0.0, 1.0),)


def test_a_stack_shares_one_percentile_scale_and_its_planes_go_back_exactly():
    stack = np.stack([camera_image(5), camera_image(6) + 50]).astype(np.uint16)
    stack[1, 0, 0] = 65535  # a hot pixel in one plane
    low, high = value_range(stack)
    lo, hi = np.percentile(stack.astype(float), [0.1, 99.9])
    span = high[0] - low[0]
    assert (lo - low[0]) / span == pytest.approx(HEADROOM)
    assert (hi - low[0]) / span == pytest.approx(1 - HEADROOM)
    for plane in stack:
        chw, layout, _ = prepare_image(plane, value_range=(low, high))
        np.testing.assert_array_equal(restore_layout(chw, layout), plane)


def test_a_unit_range_plane_of_a_wider_float_stack_follows_the_stack_rule():
    # The stack is scaled by its percentiles (one plane goes to 5), so each plane's results
    # are kept within its own extremes, the one inside [0, 1] too, not within [0, 1].
    quiet = np.linspace(0.2, 0.7, 64 * 64, dtype=np.float32).reshape(64, 64)
    stack = np.stack([quiet, quiet * 7])
    low, high = value_range(stack)
    chw, layout, _ = prepare_image(quiet, value_range=(low, high))
    span = high[0] - low[0]
    assert layout.limits[0] == pytest.approx(((0.2 - low[0]) / span, (0.7 - low[0]) / span))
    np.testing.assert_allclose(restore_layout(chw, layout), quiet, atol=1e-6)
    # A stack inside [0, 1] keeps the plain rule for its planes.
    chw, layout, _ = prepare_image(quiet, value_range=value_range(np.stack([quiet, quiet / 2])))
    assert layout.limits == ((0.0, 1.0),)


def test_a_flat_background_with_few_bright_pixels_falls_back_to_the_extremes():
    image = np.full((64, 64), 100, np.uint16)
    image[10, 10] = 900  # percentiles coincide: 100 and 100
    chw, layout, _ = prepare_image(image)
    assert chw[0, 10, 10] == pytest.approx(1 - HEADROOM) and chw[0, 0, 0] == pytest.approx(HEADROOM)
    np.testing.assert_array_equal(restore_layout(chw, layout), image)
