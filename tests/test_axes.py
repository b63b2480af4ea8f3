import numpy as np
import pytest

from napari_dip.arrays import guess_channel_axis, prepare_image, value_range
from napari_dip.axes import layout_for, parse_axes
from napari_dip.errors import ConstantImageError, InputError


@pytest.mark.parametrize(
    "axes,ndim,letters",
    [
        ("YX", 2, "YX"),
        ("zyx", 3, "ZYX"),
        ("CYX", 3, "CYX"),
        ("YXC", 3, "YXC"),
        ("YXS", 3, "YXC"),  # tifffile's samples are channels-last colour
        ("TZYX", 4, "TZYX"),
        ("TCZYX", 5, "TCZYX"),
        ("TZCYX", 5, "TZCYX"),
        ("ZTYXS", 5, "ZTYXC"),
    ],
)
def test_valid_axes(axes, ndim, letters):
    assert parse_axes(axes, ndim) == letters


@pytest.mark.parametrize(
    "axes,ndim,message",
    [
        ("QYX", 3, "unknown letter.*Q.*TZCYX"),
        ("", 2, "no letters"),
        ("ZZYX", 4, "Z is repeated"),
        ("CYXS", 4, "C is repeated.*S counts as C"),
        ("ZY", 2, "Y and X .* are needed"),
        ("YXZ", 3, "Y and X must be the last two axes"),
        ("XY", 2, "Y and X must be the last two axes"),
        ("YCX", 3, "Y and X must be the last two axes"),
        ("YXCZ", 4, "Y and X must be the last two axes"),
        ("ZYX", 2, "names 3 dimensions but the array has 2"),
        ("YX", 3, "names 2 dimensions but the array has 3"),
    ],
)
def test_bad_axes_are_explained(axes, ndim, message):
    with pytest.raises(InputError, match=message):
        parse_axes(axes, ndim)


def test_axes_must_be_a_string():
    with pytest.raises(InputError, match="string of letters"):
        parse_axes(0)


@pytest.mark.parametrize(
    "shape,kwargs,axes",
    [
        ((64, 64), {}, "YX"),
        ((64, 64, 3), {}, "YXC"),
        ((64, 64, 4), {}, "YXC"),
        ((5, 64, 64), {"channel_axis": 0}, "CYX"),
        ((64, 64, 16), {"channel_axis": -1}, "YXC"),
        ((5, 64, 64), {"axes": "ZYX"}, "ZYX"),
        ((5, 64, 64), {"axes": "CYX", "channel_axis": 0}, "CYX"),
        ((2, 3, 64, 64), {"axes": "TZYX"}, "TZYX"),
    ],
)
def test_layout_from_axes_channel_axis_or_an_unambiguous_shape(shape, kwargs, axes):
    assert layout_for(shape, **kwargs).axes == axes


@pytest.mark.parametrize("shape", [(5, 64, 64), (3, 64, 64), (2, 32, 32), (64, 64, 5)])
def test_an_ambiguous_3d_array_is_never_guessed(shape):
    with pytest.raises(InputError) as caught:
        layout_for(shape)
    message = str(caught.value)
    assert f"shape {shape}" in message and "planes or" in message
    assert 'axes="ZYX" for a stack' in message and 'axes="CYX" for channels' in message
    # the engine's own entry points say the same: a (5, 64, 64) TIFF is no longer one 5-channel image
    image = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    for call in (lambda: guess_channel_axis(shape), lambda: prepare_image(image)):
        with pytest.raises(InputError, match='axes="ZYX"'):
            call()


@pytest.mark.parametrize(
    "shape,kwargs,message",
    [
        ((2, 3, 64, 64), {}, "4D array needs axes.*axes='TZYX'"),
        ((2, 3, 4, 64, 64), {}, "5D array needs axes.*axes='TZCYX'"),
        ((2, 3, 64, 64), {"channel_axis": 1}, "needs axes"),
        ((64, 64), {"channel_axis": 0}, "image is 2D"),
        ((5, 64, 64), {"channel_axis": 1}, "channel_axis must be 0"),
        ((5, 64, 64), {"axes": "ZYX", "channel_axis": 0}, "does not agree"),
        ((64, 64, 3), {"axes": "YXC", "channel_axis": 0}, "does not agree"),
        ((64,), {}, "2D grey"),
    ],
)
def test_layout_errors(shape, kwargs, message):
    with pytest.raises(InputError, match=message):
        layout_for(shape, **kwargs)


def test_what_a_layout_says():
    layout = layout_for((2, 3, 4, 32, 48), "TCZYX")
    assert layout.iterated == "TZ" and layout.iterated_axes == (0, 2)
    assert layout.stack_shape == (2, 4) and layout.planes == 8 and layout.is_stack
    assert layout.channel_axis == 1 and layout.channels == 3
    assert layout.plane_axes == "CYX" and layout.plane_channel_axis == 0 and layout.plane_shape == (3, 32, 48)
    assert (layout.height, layout.width) == (32, 48)
    assert list(layout.indices())[:3] == [(0, 0), (0, 1), (0, 2)]  # C order
    assert layout.plane_name((1, 2)) == "T=1 Z=2"
    assert layout.describe() == "TCZYX 2x3x4x32x48 (8 planes)"
    single = layout_for((32, 48, 3))
    assert not single.is_stack and single.planes == 1 and list(single.indices()) == [()]
    assert single.plane_channel_axis == -1


@pytest.mark.parametrize(
    "shape,axes,plane_shape",
    [
        ((3, 20, 24), "ZYX", (20, 24)),
        ((4, 20, 24), "TYX", (20, 24)),
        ((3, 20, 24), "CYX", (3, 20, 24)),
        ((20, 24, 3), "YXC", (20, 24, 3)),
        ((2, 3, 4, 20, 24), "TCZYX", (3, 20, 24)),
        ((2, 4, 20, 24, 3), "TZYXC", (20, 24, 3)),
    ],
)
@pytest.mark.parametrize("factor", [None, 2])
def test_planes_split_and_assemble(shape, axes, plane_shape, factor):
    layout = layout_for(shape, axes)
    array = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    planes = list(layout.split(array))
    assert len(planes) == layout.planes and all(p.shape == plane_shape for _, p in planes)
    # each plane is handed to the 2D engine in the layout its channel_axis says
    for _, plane in planes:
        assert prepare_image(plane, layout.plane_channel_axis)[0].shape[-2:] == (20, 24)
    f = factor or 1
    if f == 1:
        np.testing.assert_array_equal(layout.assemble(planes, array.dtype), array)
    else:
        y, x = layout.plane_axes.index("Y"), layout.plane_axes.index("X")
        enlarged = [(i, np.repeat(np.repeat(p, f, axis=y), f, axis=x)) for i, p in planes]
        out = layout.assemble(enlarged, array.dtype, factor)
        assert out.shape == layout.output_shape(factor)
        sizes = dict(zip(axes, shape))
        assert out.shape == tuple(sizes[a] * (f if a in "YX" else 1) for a in axes)
        every_f = tuple(slice(None, None, f) if a in "YX" else slice(None) for a in axes)
        np.testing.assert_array_equal(out[every_f], array)


def test_a_stack_of_one_plane_expands_back():
    layout = layout_for((1, 3, 20, 24), "ZCYX")
    assert layout.expand(np.zeros((3, 20, 24))).shape == (1, 3, 20, 24)


def test_put_checks_the_plane_shape():
    layout = layout_for((3, 20, 24), "ZYX")
    with pytest.raises(ValueError, match="plane"):
        layout.put(layout.new_output(np.uint8), (0,), np.zeros((20, 25)))


@pytest.mark.parametrize(
    "axes,shape,mask_shape,kind",
    [
        ("ZYX", (3, 20, 24), (20, 24), "shared"),
        ("ZYX", (3, 20, 24), (3, 20, 24), "per plane"),
        ("TCZYX", (2, 3, 4, 20, 24), (20, 24), "shared"),
        ("TCZYX", (2, 3, 4, 20, 24), (3, 20, 24), "shared"),  # one mask per channel, every plane
        ("TCZYX", (2, 3, 4, 20, 24), (2, 4, 20, 24), "per plane"),
        ("TCZYX", (2, 3, 4, 20, 24), (2, 3, 4, 20, 24), "per plane"),
    ],
)
def test_mask_kinds(axes, shape, mask_shape, kind):
    layout = layout_for(shape, axes)
    assert layout.mask_kind(mask_shape) == kind
    mask = np.arange(np.prod(mask_shape)).reshape(mask_shape)
    index = (1, 2) if len(layout.iterated) == 2 else (1,)
    plane_mask = layout.mask_plane(mask, index)
    if kind == "shared":
        assert plane_mask is mask
    elif mask_shape == shape:
        np.testing.assert_array_equal(plane_mask, layout.plane(mask, index))
    else:
        np.testing.assert_array_equal(plane_mask, mask[index])


def test_bad_and_ambiguous_mask_shapes():
    layout = layout_for((2, 3, 4, 20, 24), "TCZYX")
    with pytest.raises(InputError, match=r"mask has shape \(4, 20, 24\).*needs one of \(20, 24\), \(3, 20, 24\)"):
        layout.mask_kind((4, 20, 24))
    both = layout_for((3, 3, 20, 24), "ZCYX")  # (3, 20, 24): per channel or per plane?
    with pytest.raises(InputError, match="fits both.*whole shape"):
        both.mask_kind((3, 20, 24))


def test_a_stack_has_one_value_range():
    stack = np.stack([np.full((16, 16), 100), np.arange(256).reshape(16, 16) + 1000]).astype(np.uint16)
    # The stack's 0.1 and 99.9 percentiles (100 and about 1255) go to 0.1 and 0.9.
    (low,), (high,) = value_range(stack)
    lo, hi = np.percentile(stack.astype(float), [0.1, 99.9])
    assert (lo - low) / (high - low) == pytest.approx(0.1) and (hi - low) / (high - low) == pytest.approx(0.9)
    # per channel, over every plane; RGBA's alpha left out; uint8 and unit floats as always
    tczyx = np.zeros((2, 2, 3, 16, 16), np.uint16)
    tczyx[:, 0] = np.arange(16)[None, None, None] + 10
    tczyx[1, 1, 2] = 5000  # percentiles 0 and 0 there: the extremes, with the head-room
    low, high = value_range(tczyx, 1)
    np.testing.assert_allclose(low, (10 - 0.1 * 15 / 0.8 - 0.0, 0 - 5000 / 8), atol=0.1)
    np.testing.assert_allclose(high, (25 + 0.1 * 15 / 0.8, 5000 + 5000 / 8), atol=0.1)
    rgba = np.zeros((3, 16, 16, 4), np.float32)
    rgba[..., 3] = 7
    rgba[0, 0, 0, :3] = 0.5
    assert value_range(rgba, -1, channels=3) == ((0.0,) * 3, (1.0,) * 3)
    assert value_range(np.arange(512, dtype=np.uint8).reshape(2, 16, 16)) == ((0.0,), (255.0,))
    with pytest.raises(ConstantImageError, match="every value is 9"):
        value_range(np.full((3, 16, 16), 9, np.uint16))
    with pytest.raises(InputError, match="NaN"):
        value_range(np.full((3, 16, 16), np.nan))


def test_a_constant_plane_is_accepted_with_the_stack_range():
    plane = np.full((16, 16), 100, np.uint16)
    chw, layout, _ = prepare_image(plane, value_range=((100.0,), (1255.0,)))
    assert (chw == 0).all() and layout.low == (100.0,) and layout.high == (1255.0,)
    with pytest.raises(ConstantImageError):
        prepare_image(plane)  # alone it has nothing to restore
