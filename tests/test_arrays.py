import warnings

import numpy as np
import pytest

from napari_dip.arrays import (
    MIN_SIDE,
    guess_channel_axis,
    keep_known_pixels,
    prepare_image,
    prepare_mask,
    restore_layout,
)
from napari_dip.errors import ConstantImageError, InputError, InputWarning


def varying(shape, dtype=np.uint8):
    """An image of this shape that is not constant."""
    return (np.arange(int(np.prod(shape))) % 251).reshape(shape).astype(dtype)


def roundtrip(image, **kw):
    chw, layout, alpha = prepare_image(image, **kw)
    return chw, restore_layout(chw, layout, alpha)


def channel_first(image):
    """``channel_axis=0`` for a channel-first 3D test image: a ``(C, H, W)`` array is
    ambiguous (planes or channels) and is never guessed."""
    return {"channel_axis": 0} if image.ndim == 3 and image.shape[-1] > 4 else {}


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 65536, (20, 24, 3), dtype=np.uint16),
        np.random.default_rng(2).integers(100, 4096, (5, 20, 24)).astype(np.uint16),
        np.random.default_rng(3).normal(100.0, 30.0, (20, 24)).astype(np.float32),
        np.random.default_rng(4).uniform(-1, 1, (20, 24, 3)),
        np.random.default_rng(5).uniform(0, 1, (2, 20, 24)).astype(np.float16),
    ],
)
def test_dtype_shape_and_values_survive_the_round_trip(image):
    chw, back = roundtrip(image, **channel_first(image))
    assert chw.dtype == np.float32 and chw.min() >= 0 and chw.max() <= 1
    assert back.dtype == image.dtype and back.shape == image.shape
    tolerance = 0 if image.dtype.kind == "u" else 1e-3 * float(np.ptp(image.astype(float)))
    np.testing.assert_allclose(back.astype(float), image.astype(float), atol=tolerance)


def test_uint8_is_scaled_by_255_and_uint16_by_its_own_range():
    chw, _, _ = prepare_image(np.array([[0, 51], [102, 255]] * 8, np.uint8).repeat(8, axis=1))
    assert chw.max() == 1.0 and np.isclose(chw[0, 0, 8], 0.2)
    twelve_bit = np.linspace(200, 4000, 16 * 16).reshape(16, 16).astype(np.uint16)
    chw, layout, _ = prepare_image(twelve_bit)
    # Its 0.1 and 99.9 percentiles go to 0.1 and 0.9 (head-room for the sigmoid).
    assert chw.min() == pytest.approx(0.1, abs=0.002) and chw.max() == pytest.approx(0.9, abs=0.002)
    assert layout.low[0] == pytest.approx(200 - 3800 / 8, abs=5) and layout.high[0] == pytest.approx(4000 + 3800 / 8, abs=5)


def test_float_in_unit_range_is_used_as_it_is():
    image = np.linspace(0.2, 0.7, 16 * 16, dtype=np.float32).reshape(16, 16)
    chw, layout, _ = prepare_image(image)
    np.testing.assert_array_equal(chw[0], image)
    assert layout.low == (0.0,) and layout.high == (1.0,)


def test_multichannel_is_normalised_per_channel():
    image = np.stack([np.linspace(0, 10, 256), np.linspace(1000, 60000, 256)]).reshape(2, 16, 16).astype(np.uint16)
    chw, _, _ = prepare_image(image, channel_axis=0)
    assert chw.shape == (2, 16, 16)
    # Each channel by its own percentiles: both span about 0.8 (0.1 to 0.9), whatever their units.
    spans = np.ptp(chw, axis=(1, 2))
    assert (spans > 0.78).all() and (spans < 0.9).all()


def test_rgba_alpha_is_passed_through_untouched():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    chw, layout, alpha = prepare_image(image)
    assert chw.shape == (3, 16, 16) and layout.has_alpha
    restored = restore_layout(np.zeros_like(chw), layout, alpha)
    np.testing.assert_array_equal(restored[..., 3], image[..., 3])
    assert (restored[..., :3] == 0).all()


def test_constant_channel_next_to_varying_ones_stays_constant():
    image = np.stack([np.full((16, 16), 1234), np.arange(256).reshape(16, 16)]).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chw, back = roundtrip(image, channel_axis=0)
    assert (chw[0] == 0).all() and (back[0] == 1234).all()
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize(
    "image,shown",
    [
        (np.full((32, 32), 128, np.uint8), "every value is 128"),
        (np.full((32, 32), 1234, np.uint16), "every value is 1234"),
        (np.full((32, 32), 0.25, np.float32), "every value is 0.25"),
        (np.full((2, 32, 32), 7, np.uint16), "every value is 7"),
        (np.tile(np.array([10, 20, 30], np.uint8), (32, 32, 1)), "each channel holds a single value"),
        # the alpha channel is passed through, not restored: varying alpha does not count
        (np.dstack([np.full((32, 32, 3), 9, np.uint8), np.arange(1024).reshape(32, 32) % 256]).astype(np.uint8),
         "every value is 9"),
    ],
)
def test_constant_image_is_refused_without_numpy_warnings(image, shown):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConstantImageError, match=f"the image is constant \\({shown}\\): there is nothing to restore"):
            prepare_image(image, **channel_first(image))
    assert issubclass(ConstantImageError, InputError)


def test_channel_axis_guess_and_override():
    assert guess_channel_axis((64, 64)) is None
    assert guess_channel_axis((64, 64, 3)) == 2
    for ambiguous in [(3, 64, 64), (5, 64, 64)]:  # planes or channels: never guessed (issue 10)
        with pytest.raises(InputError, match='axes="ZYX" for a stack'):
            guess_channel_axis(ambiguous)
    assert prepare_image(varying((5, 20, 24)), channel_axis=0)[0].shape == (5, 20, 24)
    chw, layout, _ = prepare_image(varying((20, 24, 16), np.float32), channel_axis=-1)
    assert chw.shape == (16, 20, 24) and layout.channel_axis == 2 and not layout.has_alpha


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((8, 40), np.uint8), f"at least {MIN_SIDE}"),
        (np.zeros((2, 3, 32, 32), np.uint8), "4D array needs axes"),
        (np.zeros((5, 32, 32), np.uint8), "5 planes or 5 channels"),
        (np.zeros((32,), np.uint8), "2D grey"),
        (np.zeros((32, 32), np.int32), "dtype int32"),
        (np.zeros((32, 32), bool), "dtype bool"),
        (np.full((32, 32), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_explained(image, message):
    with pytest.raises(InputError, match=message):
        prepare_image(image)


def test_mask_nonzero_marks_holes_and_broadcasts():
    _, layout, _ = prepare_image(varying((20, 30, 3)))
    labels = np.zeros((20, 30), np.int32)
    labels[5:10, 5:10] = 2  # any nonzero label is a hole
    known = prepare_mask(labels, layout)
    assert known.shape == (1, 20, 30)
    assert known[0, 5:10, 5:10].sum() == 0 and known.sum() == 20 * 30 - 25


def test_mask_per_channel_in_the_image_layout():
    _, layout, _ = prepare_image(varying((20, 30, 3)))
    mask = np.zeros((20, 30, 3), bool)
    mask[:5, :, 1] = True
    known = prepare_mask(mask, layout)
    assert known.shape == (3, 20, 30)
    assert known[1, :5].sum() == 0 and known[0].all()


@pytest.mark.parametrize(
    "mask,message",
    [
        (np.zeros((20, 31)), "shape"),
        (np.zeros((20, 30)), "no pixel to fill"),
        (np.ones((20, 30)), "covers every pixel"),
    ],
)
def test_bad_masks_are_explained(mask, message):
    _, layout, _ = prepare_image(varying((20, 30)))
    with pytest.raises(InputError, match=message):
        prepare_mask(mask, layout)


def test_mask_marking_known_pixels_is_the_inverse():
    _, layout, _ = prepare_image(varying((20, 30)))
    holes = np.zeros((20, 30), bool)
    holes[5:10, 5:10] = True
    published = np.where(holes, 0, 255).astype(np.uint8)  # the paper's masks: 255 = known
    np.testing.assert_array_equal(prepare_mask(published, layout, marks="known"), prepare_mask(holes, layout))
    with pytest.raises(InputError, match="mask_marks"):
        prepare_mask(holes, layout, marks="white")
    with pytest.raises(InputError, match="no hole"):
        prepare_mask(np.ones((20, 30)), layout, marks="known")


def test_a_mask_that_is_mostly_holes_warns_it_is_probably_inverted():
    _, layout, _ = prepare_image(varying((20, 30)))
    published = np.full((20, 30), 255, np.uint8)
    published[5:10, 5:10] = 0  # 255 = known, passed as if nonzero were holes
    with pytest.warns(InputWarning, match=r"95\.8 % of the image holes.*probably inverted.*--mask-known"):
        known = prepare_mask(published, layout)
    assert known.mean() == pytest.approx(25 / 600)  # used as given: a warning, not an error
    with pytest.warns(InputWarning, match="leave out --mask-known"):
        prepare_mask(published == 0, layout, marks="known")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_mask(published == 0, layout)  # the right convention: no warning
        prepare_mask(published, layout, marks="known")


@pytest.mark.parametrize(
    "shape,channel_axis,mask_shape",
    [
        ((20, 30), None, (20, 30)),
        ((20, 30, 3), 2, (20, 30)),
        ((20, 30, 3), 2, (20, 30, 3)),
        ((20, 30, 4), 2, (20, 30)),
        ((2, 20, 30), 0, (2, 20, 30)),
    ],
)
def test_keep_known_pixels_takes_only_the_holes_from_the_result(shape, channel_axis, mask_shape):
    rng = np.random.default_rng(0)
    original = rng.integers(0, 65536, shape).astype(np.uint16)
    _, layout, _ = prepare_image(original, channel_axis)
    mask = rng.random(mask_shape) < 0.3
    known = prepare_mask(mask, layout)
    result = rng.integers(0, 65536, shape).astype(np.uint16)
    kept = keep_known_pixels(result, original, known, layout)
    assert kept.dtype == np.uint16 and kept.shape == shape
    holes = np.broadcast_to(mask if mask.shape == shape else (mask[..., None] if channel_axis == 2 else mask), shape)
    if shape[-1] == 4:  # RGBA: alpha is the original's, holes or not
        holes = holes.copy()
        holes[..., 3] = False
    np.testing.assert_array_equal(kept[~holes], original[~holes])
    np.testing.assert_array_equal(kept[holes], result[holes])
