"""Pure helpers of the napari widget: names, plane bookkeeping, transforms, metadata."""

import numpy as np
import pytest

from napari_dip import _layers


def test_output_names_say_input_and_task():
    assert _layers.output_name("cells", "denoise") == "cells [DIP denoise]"
    assert _layers.output_name("cells", "super-resolve", 4) == "cells [DIP super-resolve x4]"
    assert _layers.output_name("cells", "inpaint") == "cells [DIP inpaint]"


@pytest.mark.parametrize(
    ("shape", "rgb", "leading", "planes", "out_plane"),
    [
        ((32, 48), False, (), [()], (64, 96)),
        ((32, 48, 3), True, (), [()], (64, 96, 3)),
        ((2, 32, 48), False, (2,), [(0,), (1,)], (64, 96)),
        ((2, 3, 32, 48, 4), True, (2, 3), [(i, j) for i in range(2) for j in range(3)], (64, 96, 4)),
    ],
)
def test_plane_bookkeeping(shape, rgb, leading, planes, out_plane):
    assert _layers.leading_shape(shape, rgb) == leading
    assert _layers.plane_indices(shape, rgb) == planes
    assert _layers.output_plane_shape(shape, rgb, 2) == out_plane


def _geometry(ndim=2, scale=None, translate=None, rotate=None, shear=None):
    return _layers.Geometry(
        scale=tuple(scale or [1.0] * ndim),
        translate=tuple(translate or [0.0] * ndim),
        rotate=np.eye(ndim) if rotate is None else np.asarray(rotate, float),
        shear=np.eye(ndim) if shear is None else np.asarray(shear, float),
        affine=np.eye(ndim + 1),
        units=("micrometer",) * ndim,
        axis_labels=tuple("zyx"[-ndim:]),
    )


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_super_resolution_geometry_keeps_pixel_edges_in_place(factor):
    geometry = _geometry(scale=[0.5, 2.0], translate=[10.0, -3.0])
    out = _layers.output_geometry(geometry, factor=factor)
    assert out.scale == pytest.approx((0.5 / factor, 2.0 / factor))
    # translate_new = translate + scale * (-0.5 + 0.5 / factor)
    expected = np.array([10.0, -3.0]) + np.array([0.5, 2.0]) * (-0.5 + 0.5 / factor)
    assert out.translate == pytest.approx(tuple(expected))
    # The input's first pixel edge (data -0.5) and last edge (n - 0.5) map to the output's.
    n = 32
    for data_in, data_out in [(-0.5, -0.5), (n - 0.5, n * factor - 0.5)]:
        world_in = np.array(geometry.translate) + np.array(geometry.scale) * data_in
        world_out = np.array(out.translate) + np.array(out.scale) * data_out
        assert world_out == pytest.approx(world_in)


def test_super_resolution_geometry_follows_rotation_and_leaves_leading_axes():
    angle = np.deg2rad(30)
    rotate = np.eye(3)
    rotate[1:, 1:] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    geometry = _geometry(ndim=3, scale=[5.0, 1.0, 2.0], translate=[1.0, 2.0, 3.0], rotate=rotate)
    out = _layers.output_geometry(geometry, factor=2)
    assert out.scale == pytest.approx((5.0, 0.5, 1.0))
    # The world position of the input's corner (-0.5, -0.5) equals the output's corner.
    corner = np.array([0.0, -0.5, -0.5])
    world_in = geometry.linear_matrix() @ corner + np.array(geometry.translate)
    world_out = out.linear_matrix() @ corner + np.array(out.translate)
    assert world_out == pytest.approx(world_in)
    assert out.translate[0] == pytest.approx(1.0)


def test_plane_in_view_output_sits_at_that_plane():
    geometry = _geometry(ndim=3, scale=[4.0, 1.0, 1.0], translate=[100.0, 0.0, 0.0])
    out = _layers.output_geometry(geometry, plane_offset=(7,))
    assert out.translate == pytest.approx((128.0, 0.0, 0.0))
    assert out.scale == geometry.scale


def test_shear_vector_becomes_the_upper_triangular_matrix_napari_uses():
    from napari.layers import Image

    layer = Image(np.zeros((4, 5, 6)), shear=[0.1, 0.2, 0.3])
    matrix = _layers.shear_matrix(layer.shear, 3)
    again = Image(np.zeros((4, 5, 6)), shear=matrix)
    np.testing.assert_allclose(again.shear, layer.shear)
    np.testing.assert_allclose(np.diag(matrix), 1.0)


def test_layer_geometry_round_trips_through_a_layer():
    from napari.layers import Image

    layer = Image(
        np.zeros((6, 7)),
        scale=(2.0, 3.0),
        translate=(1.0, -1.0),
        rotate=15,
        shear=[0.25],
        affine=np.array([[1.0, 0, 5], [0, 1.0, 6], [0, 0, 1]]),
        units=("um", "um"),
        axis_labels=("y", "x"),
    )
    geometry = _layers.layer_geometry(layer)
    copy = Image(np.zeros((6, 7)), **geometry.as_layer_kwargs())
    for point in [(0, 0), (5, 6), (2.5, -0.5)]:
        np.testing.assert_allclose(copy.data_to_world(point), layer.data_to_world(point))
    assert copy.axis_labels == ("y", "x")
    assert copy.units == layer.units


def test_leading_snapshot_axis_keeps_the_image_transform():
    from napari.layers import Image

    layer = Image(np.zeros((6, 7)), scale=(2.0, 3.0), translate=(1.0, -1.0), rotate=20, shear=[0.1])
    stacked = _layers.with_leading_axis(_layers.layer_geometry(layer), label="iteration", scale=25, translate=25)
    copy = Image(np.zeros((3, 6, 7)), **stacked.as_layer_kwargs())
    for point in [(0, 0), (5, 6)]:
        world = copy.data_to_world((2, *point))
        assert world[0] == pytest.approx(75.0)
        np.testing.assert_allclose(world[1:], layer.data_to_world(point))
    assert copy.axis_labels[0] == "iteration"


def test_snapshot_count_matches_the_engine_schedule():
    assert _layers.snapshot_count(100, 25) == 4
    assert _layers.snapshot_count(101, 25) == 5
    assert _layers.snapshot_count(5, 10) == 1


def test_run_metadata_is_plain_and_complete():
    meta = _layers.run_metadata(
        task="denoise",
        preset="fast",
        factor=None,
        parameters={"iterations": 10},
        seed=3,
        device="cpu",
        iterations_run=7,
        iterations_planned=10,
        stop_reason="user",
        input_name="cells",
        planes=[(0,), (1,)],
        version="1.2.3",
    )
    assert meta["stop_reason"] == "user"
    assert meta["iterations_run"] == 7
    assert meta["planes"] == [[0], [1]]
    assert meta["napari_dip"] == "1.2.3"
