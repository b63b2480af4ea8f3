"""Pure helpers of the napari widgets (no display needed): names, plane bookkeeping,
transforms, metadata, rate and ETA, the device fallback."""

import numpy as np
import pytest

from napari_dip.widgets import layers as _layers
from napari_dip.widgets import timing
from napari_dip.widgets.prefs import device_choice


def test_output_names_say_input_task_and_settings():
    assert _layers.output_name("cells", "denoise") == "cells [DIP denoise]"
    assert _layers.output_name("cells", "super-resolve", 4) == "cells [DIP super-resolve x4]"
    assert _layers.output_name("cells", "inpaint") == "cells [DIP inpaint]"
    assert _layers.output_name("cells", "denoise", preset="fast", seed=3) == "cells [DIP denoise fast seed 3]"
    taken = {"cells [DIP inpaint paper seed 0]", "cells [DIP inpaint paper seed 0 #2]"}
    assert _layers.output_name("cells", "inpaint", preset="paper", seed=0, taken=taken) == (
        "cells [DIP inpaint paper seed 0 #3]"
    )


def test_output_names_tell_the_paper_network_by_recorruption_from_the_papers_way():
    recorrupted = {"preset": "paper", "fit": {"recorrupt_sigma": 0.1}}
    assert _layers.preset_label(recorrupted) == "paper recorrupted"
    assert _layers.preset_label({"preset": "paper", "fit": {"recorrupt_sigma": None}}) == "paper"
    # fast recorrupts by default: its name stays as it was.
    assert _layers.preset_label({"preset": "fast", "fit": {"recorrupt_sigma": 0.1}}) == "fast"
    assert _layers.preset_label({}) is None


def test_rate_is_per_second_or_per_iteration():
    assert timing.format_rate(25.0) == "25.0 it/s"
    assert timing.format_rate(0.05) == "20.0 s/it"  # not "0.1 it/s"
    assert timing.format_rate(0.0) == "? it/s"


def test_eta_counts_to_the_expected_stop_not_the_budget():
    # The report: 1:26:57 for a run that stopped after 1210 of 5000 iterations.
    text = timing.eta_text(iteration=1000, budget=5000, expected_stop=1210, rate=1.0)
    assert text == "ETA 3:30 (stop ~1210)"
    # Without a stopping rule it counts to the budget.
    assert timing.eta_text(iteration=1000, budget=5000, expected_stop=5000, rate=1.0) == "ETA 1:06:40"
    assert timing.eta_text(iteration=10, budget=100, expected_stop=None, rate=None) == "ETA ?"


def test_eta_of_a_stack_names_the_plane_and_bounds_the_rest():
    text = timing.eta_text(iteration=50, budget=100, expected_stop=60, rate=1.0, plane=1, planes=3)
    # 10 s to this plane's expected stop; at most 10 + 100 s for the last plane's budget.
    assert text == "ETA 0:10 (stop ~60) for plane 2/3, all \u2264 1:50"
    assert timing.eta_text(iteration=50, budget=100, expected_stop=None, rate=1.0, plane=2, planes=3) == (
        "ETA 0:50 for plane 3/3"
    )


def test_rate_leaves_out_the_time_spent_paused():
    # The report: ETA 8:42 before a pause, 3:58:44 after Resume.
    meter = timing.RateMeter()
    meter.start(0.0)
    meter.update(0, now=1.0)  # the first snapshot anchors the rate
    assert meter.update(100, now=11.0) == pytest.approx(10.0)
    meter.pause(11.0)
    assert meter.active(500.0) == pytest.approx(11.0)
    meter.resume(1000.0)  # paused for 989 s
    assert meter.update(110, now=1001.0) == pytest.approx(10.0)
    assert meter.update(130, now=1003.0) == pytest.approx(10.0)


def test_durations_read_as_clock_times():
    assert timing.format_duration(59.6) == "1:00"
    assert timing.format_duration(3600) == "1:00:00"
    assert timing.format_duration(float("inf")) == "?"


def test_a_remembered_device_missing_here_falls_back_to_auto():
    assert device_choice("cuda:1", ["auto", "cuda:0", "cpu"]) == (
        "auto",
        "the saved device 'cuda:1' is not available here; using auto",
    )
    assert device_choice("mps", ["auto", "mps", "cpu"]) == ("mps", "")
    assert device_choice(None, ["auto", "cpu"]) == ("auto", "")


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


class _Dims:
    def __init__(self, ndim, order):
        self.ndim, self.order = ndim, tuple(order)


class _Viewer:
    def __init__(self, ndim, order):
        self.dims = _Dims(ndim, order)


class _Layer:
    def __init__(self, ndim):
        self.ndim = ndim


def test_view_order_puts_the_displayed_axes_last():
    assert _layers.view_order(_Viewer(3, (0, 1, 2)), _Layer(3)) is None  # the layer's own order
    assert _layers.view_order(_Viewer(3, (1, 0, 2)), _Layer(3)) == (1, 0, 2)  # Z-X shown: planes along Y
    assert _layers.view_order(_Viewer(3, (2, 0, 1)), _Layer(3)) == (2, 0, 1)
    assert _layers.view_order(_Viewer(4, (0, 2, 3, 1)), _Layer(4)) == (0, 2, 3, 1)  # others keep their order
    assert _layers.view_order(_Viewer(3, (0, 2, 1)), _Layer(3)) == (0, 2, 1)  # Y and X swapped on screen
    # A 2D layer in a 3D viewer: only its own axes count.
    assert _layers.view_order(_Viewer(3, (1, 0, 2)), _Layer(2)) is None
    # RGB: the colour axis stays last in the data.
    assert _layers.data_order((1, 0, 2), rgb=True) == (1, 0, 2, 3)
    order = (2, 0, 3, 1)
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(np.transpose(np.transpose(data, order), _layers.inverse_order(order)), data)


def test_output_geometry_of_a_plane_of_other_axes():
    geometry = _layers.Geometry(scale=(2.0, 3.0, 0.5), translate=(0.0, 10.0, 0.0), rotate=np.eye(3),
                                shear=np.eye(3), affine=np.eye(4), units=("um",) * 3, axis_labels=("z", "y", "x"))
    # The plane is Z-X (axes 0 and 2), planes along Y; the output holds Y index 4 only, enlarged x2.
    out = _layers.output_geometry(geometry, factor=2, plane_offset=(4,), order=(1, 0, 2))
    np.testing.assert_allclose(out.scale, (1.0, 3.0, 0.25))
    np.testing.assert_allclose(out.translate, (-0.5, 10.0 + 4 * 3.0, -0.125))
