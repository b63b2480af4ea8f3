"""The napari dock widgets: streaming fits into one output layer, pause/stop, transforms,
metadata, masks from Labels, nD planes, naming and replacing outputs, layer boxes that
follow the layer list, messages, ETA and the dock's width. Runs under Xvfb (pytest-xvfb)
with real viewers.

Fits are tiny (32x32 pixels, 8 network channels, a handful of iterations, CPU) so the
suite stays fast on a 2-core machine; what is checked is the plumbing, not restoration
quality. Some tests replace the engine with a scripted one to control what it yields.
"""

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_dip.widgets.batch import BatchWidget  # noqa: E402
from napari_dip.widgets.dock import (  # noqa: E402
    DenoiseWidget,
    InpaintWidget,
    SuperResolveWidget,
)
from napari_dip.widgets.plan import PLANES_ALL  # noqa: E402

pytestmark = pytest.mark.gui

WAIT_MS = 60_000
TOAST = "napari_dip.widgets.controller.show_error"
WARNING_TOAST = "napari_dip.widgets.controller.show_warning"


def _image(shape=(32, 32), seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    base = 0.5 + 0.4 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
    data = np.broadcast_to(base, shape) + rng.normal(0, 0.1, shape)
    data = np.clip(data, 0, 1)
    if dtype == np.uint8:
        return (data * 255).astype(np.uint8)
    return data.astype(dtype)


def _tiny(widget, iterations=6, every=2, seed=0, preset="fast"):
    """Make a widget's fit tiny: fast preset, CPU, 8 channels, few iterations."""
    form = widget.form
    form.device.value = "cpu"
    form.preset.value = preset  # reloads the advanced values: set them afterwards
    form.iterations.value = iterations
    form.update_every.value = every
    form.channels.value = 8
    form.seed.value = seed
    return widget


def _denoise_every_plane(viewer, qtbot, monkeypatch):
    """Run a tiny Denoise dock over every plane of the viewer's stack to its end; returns
    the widget and the error notifications it showed."""
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    return widget, messages


def _dock(viewer, widget_class):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=widget_class.__name__)
    return widget


def _run_to_end(qtbot, widget):
    widget.start()
    assert widget.run_state is not None, widget.status
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)


def _outputs(viewer):
    return [layer for layer in viewer.layers if "napari_dip" in layer.metadata]


def _output(viewer):
    (layer,) = _outputs(viewer)
    return layer


def _statuses(widget, monkeypatch):
    """Record every text the status line shows."""
    seen = []
    set_status = widget.controller.set_status

    def recording(text):
        seen.append(text)
        set_status(text)

    monkeypatch.setattr(widget.controller, "set_status", recording)
    return seen


def _scripted_engine(stop_at, reason, fail_on_plane=None, expected_stop=None, best=None, crash_at=None):
    """A stand-in for iter_restore that stops early (as automatic stopping does) or fails:
    with an InputError on plane ``fail_on_plane``, with a bug at iteration ``crash_at``."""
    from napari_dip.errors import InputError
    from napari_dip.engine.fit import Snapshot

    calls = []

    def iter_restore(task, image, *, snapshot_every, iterations, **kwargs):
        calls.append(kwargs)
        if fail_on_plane is not None and len(calls) == fail_on_plane + 1:
            raise InputError("this plane cannot be restored")

        settings = {"device": "cpu", "preset": "fast", "fit": {"seed": 0}}

        def snapshots():
            for it in range(snapshot_every, stop_at + 1, snapshot_every):
                if it == crash_at:
                    raise KeyError("a bug in the engine")
                done = it == stop_at
                yield Snapshot(
                    iteration=it,
                    iterations=iterations,
                    loss=1.0 / it,
                    output=image * 0 + it,
                    average=image * 0 + it,
                    elapsed=0.01 * it,
                    done=done,
                    stop_reason=reason if done else None,
                    expected_stop=it if done else expected_stop,
                    best_iteration=best,
                    settings=settings if done or it == snapshot_every else {},
                )

        return snapshots()

    return iter_restore, calls


def _scripted_planes(engine):
    """A stand-in for iter_restore_planes: the scripted ``engine`` for each plane along the
    first axis (an error in a later plane is raised from the stream, as the API does)."""

    def iter_restore_planes(task, image, *, axes, warm_start, mask=None, **kwargs):
        def stream():
            for z in range(image.shape[0]):
                for snapshot in engine(task, image[z], **kwargs):
                    yield (z,), snapshot

        return stream()

    return iter_restore_planes


# -- one run, start to end -------------------------------------------------------------


def test_denoise_streams_into_one_layer_and_records_the_run(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data = _image((32, 32))
    original = data.copy()
    layer = viewer.add_image(
        data,
        name="cells",
        scale=(0.5, 0.25),
        translate=(3.0, 4.0),
        rotate=10,
        units=("um", "um"),
        axis_labels=("y", "x"),
        metadata={"origin": "microscope"},
    )
    before_transform = layer.data_to_world((5, 7))
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=6, every=2)

    added, refreshed = [], []

    def on_inserted(event):
        added.append(event.value.name)
        event.value.events.set_data.connect(lambda e: refreshed.append(1))

    viewer.layers.events.inserted.connect(on_inserted)
    _run_to_end(qtbot, widget)

    # One output layer, named after the input, task and settings, updated in place.
    assert added == ["cells [DIP denoise fast seed 0]"]
    output = viewer.layers["cells [DIP denoise fast seed 0]"]
    assert len(refreshed) >= 2
    assert output.data.shape == (32, 32) and output.data.dtype == np.float32
    assert output.data.std() > 0
    # Same world placement and annotations as the input.
    np.testing.assert_allclose(output.data_to_world((5, 7)), before_transform)
    assert output.axis_labels == ("y", "x")
    assert tuple(str(u) for u in output.units) == tuple(str(u) for u in layer.units)
    meta = output.metadata["napari_dip"]
    assert meta["stop_reason"] == "budget"
    assert meta["iterations_run"] == 6
    assert meta["seed"] == 0 and meta["device"] == "cpu"
    assert meta["task"] == "denoise" and meta["preset"] == "fast" and meta["preset_requested"] == "fast"
    assert meta["parameters"]["channels"] == 8
    assert meta["parameters"]["stopping"] is None  # the engine's task default
    assert meta["engine_settings"]["fit"]["iterations"] == 6
    # ... which, for this fit by recorruption, is the trend test at a 0.2 % rise
    assert meta["engine_settings"]["fit"]["recorrupt_sigma"] > 0
    assert meta["engine_settings"]["fit"]["adam_beta2"] == 0.95  # Adam's shorter memory for recorrupted fits
    stopping = meta["engine_settings"]["fit"]["stopping"]
    assert stopping["rule"] == "validation" and stopping["rise"] == 0.002
    assert meta["napari_dip"]  # the version
    assert meta["threads"] == meta["engine_settings"]["threads"] >= 1
    assert meta["best_iteration"] is None  # the stopping rule was still warming up
    assert meta["plane_results"] == [
        {"plane": [], "iterations_run": 6, "stop_reason": "budget", "best_iteration": None, "backtracks": 0,
         "reg_noise_std": meta["engine_settings"]["fit"]["reg_noise_std"], "warm_start": None,
         "warm_start_restarted": False, "drift": None}
    ]
    assert meta["warm_start"] is None and meta["axes"] == "YX"
    assert meta["constant_planes"] == [] and meta["warnings"] == []
    assert output.metadata["origin"] == "microscope"
    # The input is untouched.
    np.testing.assert_array_equal(layer.data, original)
    assert "napari_dip" not in layer.metadata
    assert widget.status.startswith("Finished")
    assert len(widget.loss_plot.losses) >= 2


def test_same_seed_gives_the_same_result_in_the_replaced_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="a")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=4, seed=5)
    _run_to_end(qtbot, widget)
    first = np.array(_output(viewer).data)
    _run_to_end(qtbot, widget)
    assert len(_outputs(viewer)) == 1  # "replace previous output" is on by default
    np.testing.assert_array_equal(_output(viewer).data, first)


def test_pause_resume_and_stop_keep_the_latest_result(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 2, timeout=WAIT_MS)

    widget.toggle_pause()
    button = widget.controls.pause_button
    qtbot.waitUntil(lambda: run.worker.is_paused and button.text == "Resume", timeout=WAIT_MS)
    qtbot.wait(50)  # a snapshot already in flight may still arrive
    received = run.snapshots_received
    qtbot.wait(600)
    assert run.snapshots_received == received, "snapshots kept coming while paused"

    widget.toggle_pause()
    qtbot.waitUntil(lambda: run.snapshots_received > received + 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: button.text == "Pause", timeout=WAIT_MS)
    # The pause does not count in the speed (and so not in the ETA).
    assert run.meter.paused_total >= 0.5
    assert "it/s" in widget.status or "s/it" in widget.status

    widget.stop()
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = _output(viewer)
    meta = output.metadata["napari_dip"]
    assert meta["stop_reason"] == "user"
    assert 2 <= meta["iterations_run"] < 5000
    (plane,) = meta["plane_results"]  # the plane under way when it was stopped
    assert plane["stop_reason"] == "user" and plane["iterations_run"] == meta["iterations_run"]
    # how the fit was made is known although the engine never sent its final snapshot
    assert meta["engine_settings"]["device"] == "cpu" and meta["engine_settings"]["fit"]["seed"] == 0
    assert output.data.std() > 0  # the latest result is kept
    assert widget.controls.run_button.enabled and not widget.controls.stop_button.enabled
    assert widget.status.startswith("Stopped")


def test_super_resolution_scales_and_shifts_the_output(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image((24, 32), dtype=np.uint8), name="tissue", scale=(2.0, 3.0), translate=(10.0, 20.0))
    widget = _dock(viewer, SuperResolveWidget)
    widget.form.factor.value = 2
    _tiny(widget, iterations=4, every=2)
    _run_to_end(qtbot, widget)
    output = viewer.layers["tissue [DIP super-resolve x2 fast seed 0]"]
    assert output.data.shape == (48, 64) and output.data.dtype == np.uint8
    np.testing.assert_allclose(output.scale, (1.0, 1.5))
    # Pixel edges line up: input edge (-0.5, -0.5) and (23.5, 31.5) match the output's.
    np.testing.assert_allclose(output.data_to_world((-0.5, -0.5)), layer.data_to_world((-0.5, -0.5)))
    np.testing.assert_allclose(output.data_to_world((47.5, 63.5)), layer.data_to_world((23.5, 31.5)))
    assert output.metadata["napari_dip"]["factor"] == 2


def test_inpainting_takes_its_mask_from_a_labels_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    holes = np.zeros((32, 32), np.uint8)
    holes[10:16, 12:20] = 1
    viewer.add_image(_image((32, 32)), name="photo")
    labels = viewer.add_labels(holes.copy(), name="holes")
    widget = _tiny(_dock(viewer, InpaintWidget), iterations=4, every=2)
    assert widget.form.mask.value.name == "holes"
    assert widget.form.image.value.name == "photo"
    _run_to_end(qtbot, widget)
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["engine_settings"]["forward_model"]
    assert meta["parameters"]["mask_marks"] == "holes"
    assert meta["mask_marks"] == "holes" and meta["keep_known"] is True
    assert meta["warnings"] == []  # 5 % holes: no warning
    np.testing.assert_array_equal(labels.data, holes)


def test_mask_of_known_pixels_is_passed_to_the_engine(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="photo")
    viewer.add_labels(np.ones((32, 32), np.uint8), name="known")
    engine, calls = _scripted_engine(stop_at=2, reason="budget")
    monkeypatch.setattr("napari_dip.restore.iter_restore", engine)
    widget = _tiny(_dock(viewer, InpaintWidget), iterations=2, every=2)
    widget.form.mask_known.value = True
    _run_to_end(qtbot, widget)
    assert calls[0]["mask_marks"] == "known" and calls[0]["keep_known"] is True
    assert _output(viewer).metadata["napari_dip"]["parameters"]["mask_marks"] == "known"


def test_raw_network_output_reaches_the_engine_and_the_record(make_napari_viewer, qtbot):
    holes = np.zeros((32, 32), np.uint8)
    holes[10:16, 12:20] = 1
    image = _image((32, 32))
    viewer = make_napari_viewer()
    viewer.add_image(image, name="photo")
    viewer.add_labels(holes, name="holes")
    widget = _tiny(_dock(viewer, InpaintWidget), iterations=4, every=2)
    widget.form.raw_output.value = True
    _run_to_end(qtbot, widget)
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["keep_known"] is False and meta["parameters"]["keep_known"] is False
    known = holes == 0
    # The network's values everywhere: the known pixels are not the input's any more.
    assert not np.array_equal(np.asarray(_output(viewer).data)[known], image[known])


def test_all_planes_of_a_stack_go_into_one_nd_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(3)])
    viewer.add_image(stack, name="zstack", scale=(4.0, 1.0, 1.0))
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert widget.form.planes.enabled
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.data.shape == (3, 32, 32)
    assert all(output.data[i].std() > 0 for i in range(3))
    np.testing.assert_allclose(output.scale, (4.0, 1.0, 1.0))
    meta = output.metadata["napari_dip"]
    assert meta["iterations_run"] == 6 and meta["planes"] == [[0], [1], [2]]
    assert meta["planes_not_restored"] == [] and "not reached" not in widget.status


def test_stopping_during_a_stack_says_which_planes_were_never_reached(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)])
    viewer.add_image(stack, name="zstack")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    widget.form.planes.value = PLANES_ALL
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 2, timeout=WAIT_MS)
    widget.stop()  # during the first plane's 5000 iterations
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = _output(viewer)
    meta = output.metadata["napari_dip"]
    assert meta["planes_not_restored"] == [[1], [2], [3]]
    assert not output.data[1:].any()  # what the record and the status call "left at zero"
    assert widget.status.startswith("Stopped") and "3 of 4 planes not reached: left at zero" in widget.status


def test_all_planes_are_warm_started_plane_to_plane_unless_unticked(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(3)])
    viewer.add_image(stack, name="frames", axis_labels=("time", "y", "x"))
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    assert not widget.form.warm_start.enabled  # only with all planes
    widget.form.planes.value = PLANES_ALL
    assert widget.form.warm_start.enabled and widget.form.warm_start.value  # on by default
    statuses = _statuses(widget, monkeypatch)
    widget.start()
    run = widget.run_state
    assert run.progress_total == 3  # the bar counts planes
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["axes"] == "TYX" and meta["warm_start"] is True
    assert [p["warm_start"] for p in meta["plane_results"]] == [
        None, {"from": [0], "from_plane": 0}, {"from": [1], "from_plane": 1}]
    assert all(p["stop_reason"] == "budget" for p in meta["plane_results"])
    assert run.progress_count == 3
    assert any(text.startswith("plane 2/3 (warm start) · iteration") for text in statuses), statuses
    assert viewer.dims.current_step[0] == 2  # the sliders followed the plane being written

    widget.form.warm_start.value = False
    _run_to_end(qtbot, widget)
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["warm_start"] is False
    assert [p["warm_start"] for p in meta["plane_results"]] == [None, None, None]
    assert [p["iterations_run"] for p in meta["plane_results"]] == [4, 4, 4]


def test_a_drifted_plane_is_fitted_afresh_and_recorded(make_napari_viewer, qtbot):
    from skimage import data

    viewer = make_napari_viewer()
    camera = data.camera()
    # One pixel down and right a frame, x2: the third frame is 4 px of the result from the first.
    frames = np.stack([camera[200 + k : 232 + k, 200 + k : 232 + k] for k in range(4)])
    viewer.add_image(frames.copy(), name="drifting", axis_labels=("time", "y", "x"))
    widget = _dock(viewer, SuperResolveWidget)
    widget.form.factor.value = 2
    _tiny(widget, iterations=4, every=2)
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    results = _output(viewer).metadata["napari_dip"]["plane_results"]
    assert [p["warm_start_restarted"] for p in results] == [False, False, True, False]
    assert [p["warm_start"] for p in results] == [
        None, {"from": [0], "from_plane": 0}, None, {"from": [2], "from_plane": 2}]
    assert results[0]["drift"] is None and [p["drift"]["from_plane"] for p in results[1:]] == [0, 0, 2]
    assert np.array_equal(viewer.layers["drifting"].data, frames)  # the input layer is left as it was


def test_a_plane_whose_fit_diverges_is_named_and_the_planes_before_it_are_kept(make_napari_viewer, qtbot,
                                                                              monkeypatch):
    from napari_dip import restore
    from tiny import diverging_at

    viewer = make_napari_viewer()
    stack = _image((3, 32, 32))
    viewer.add_image(stack.copy(), name="stack")
    monkeypatch.setattr(restore, "Fitter", diverging_at(restore.Fitter, 2))
    widget, messages = _denoise_every_plane(viewer, qtbot, monkeypatch)
    assert len(messages) == 1 and "plane 2 of 3 (Z=1): the fit diverged" in widget.status
    output = _output(viewer)
    meta = output.metadata["napari_dip"]
    assert meta["stop_reason"] == "error" and meta["error"].startswith("plane 2 of 3 (Z=1)")
    assert np.any(output.data[0] != 0)  # the first plane's result stays in the layer
    assert np.array_equal(viewer.layers["stack"].data, stack)  # the input layer is left as it was


def test_the_sliders_follow_the_plane_until_the_user_moves_one(make_napari_viewer):
    from napari_dip.widgets.follow import PlaneFollower

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((4, 3, 8, 8), np.float32), scale=(2.0, 1.0, 1.0, 1.0))
    follower = PlaneFollower(viewer, layer, 2)
    follower.show((1, 2))
    assert viewer.dims.current_step[:2] == (1, 2)
    viewer.dims.set_current_step(0, 3)  # the user looks elsewhere
    follower.show((2, 0))
    assert viewer.dims.current_step[:2] == (3, 2) and not follower.following


def test_a_layer_s_leading_axes_become_the_api_s_axes(make_napari_viewer):
    from napari_dip.widgets.plan import Choices, make_plan

    viewer = make_napari_viewer()

    def plan_for(data, together=False, **kwargs):
        layers = viewer.add_image(data, **kwargs)
        layers = layers if isinstance(layers, list) else [layers]
        choices = Choices(task="denoise", image=layers[0], planes=PLANES_ALL, together=together, group=layers)
        return make_plan(viewer, choices)

    assert plan_for(np.zeros((2, 3, 32, 32)), axis_labels=("z", "t", "y", "x")).axes == "ZTYX"
    assert plan_for(np.zeros((2, 3, 32, 32))).axes == "TZYX"  # unlabelled: T then Z
    assert plan_for(np.zeros((3, 32, 32))).axes == "ZYX"
    rgb = plan_for(np.zeros((2, 32, 32, 3), np.uint8), rgb=True)
    assert rgb.axes == "ZYXC" and rgb.planes == [(0,), (1,)]
    # More than two leading axes: handed over as one axis of planes, in the same order.
    flat = plan_for(np.zeros((2, 2, 2, 32, 32)))
    assert flat.axes == "ZYX" and flat.fit_args[0].shape == (8, 32, 32) and len(flat.planes) == 8
    # A channel group of stacks: the channels go before Y.
    group = plan_for(np.zeros((2, 3, 32, 32), np.float32), together=True, channel_axis=0)
    assert group.axes == "ZCYX" and group.fit_args[0].shape == (3, 2, 32, 32) and group.out_shape == (3, 32, 32)


def test_a_channel_group_is_restored_together_into_one_output_per_channel(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data = np.stack([_image((32, 32), seed=1), _image((32, 32), seed=2)[::-1]])
    layers = viewer.add_image(data, channel_axis=0, name=["dapi", "actin"], colormap=["blue", "green"],
                              contrast_limits=[(0.1, 0.9), (0.0, 0.8)], scale=(0.5, 0.5))
    layers[1].opacity = 0.7
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    assert not widget.form.together.enabled  # one layer selected (the last added)
    viewer.layers.selection.update(layers)
    assert widget.form.together.enabled
    widget.form.together.value = True
    _run_to_end(qtbot, widget)
    assert widget.status.startswith("Finished"), widget.status
    outputs = {layer.metadata["napari_dip"]["input_layer"]: layer for layer in _outputs(viewer)}
    assert sorted(outputs) == ["actin", "dapi"]
    for channel, source in enumerate(layers):
        output = outputs[source.name]
        assert output.name == f"{source.name} [DIP denoise fast seed 0]"
        assert output.colormap.name == source.colormap.name
        assert output.blending == source.blending  # additive, the first channel translucent_no_depth
        assert tuple(output.contrast_limits) == tuple(source.contrast_limits)
        assert output.opacity == pytest.approx(source.opacity)
        np.testing.assert_allclose(output.scale, source.scale)
        assert output.data.shape == (32, 32) and output.data.std() > 0
        meta = output.metadata["napari_dip"]
        assert meta["channels_restored_jointly"] == ["dapi", "actin"] and meta["channel"] == channel
        assert meta["axes"] == "CYX"
    assert not np.array_equal(outputs["dapi"].data, outputs["actin"].data)
    np.testing.assert_array_equal(layers[0].data, data[0])  # inputs untouched

    # Again: each output is replaced in place, not duplicated.
    _run_to_end(qtbot, widget)
    assert len(_outputs(viewer)) == 2


def test_a_channel_group_of_stacks_restores_all_planes_together(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data = np.stack([np.stack([_image((32, 32), seed=10 * c + z) for z in range(2)]) for c in range(2)])
    layers = viewer.add_image(data, channel_axis=0, name=["a", "b"])
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    viewer.layers.selection.update(layers)
    widget.form.together.value = True
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    outputs = _outputs(viewer)
    assert len(outputs) == 2
    for output in outputs:
        assert output.data.shape == (2, 32, 32) and all(output.data[z].std() > 0 for z in range(2))
        meta = output.metadata["napari_dip"]
        assert meta["axes"] == "ZCYX" and meta["warm_start"] is True
        assert meta["planes"] == [[0], [1]]


def test_plane_in_view_restores_only_the_shown_plane(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)])
    layer = viewer.add_image(stack, name="zstack", scale=(2.0, 1.0, 1.0), translate=(10.0, 0.0, 0.0))
    viewer.dims.set_current_step(0, 2)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.data.shape == (1, 32, 32)
    # Drawn at plane 2 of the input.
    np.testing.assert_allclose(output.data_to_world((0, 3, 4)), layer.data_to_world((2, 3, 4)))
    assert output.metadata["napari_dip"]["planes"] == [[2]]


def test_rgb_stays_rgb(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgb = np.stack([_image((32, 32), seed=i, dtype=np.uint8) for i in range(3)], axis=-1)
    viewer.add_image(rgb, name="colour")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert not widget.form.planes.enabled
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.rgb and output.data.shape == (32, 32, 3) and output.data.dtype == np.uint8


def test_kept_snapshots_stack_along_an_iteration_axis(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5, every=2)
    widget.form.keep_snapshots.value = True
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.data.shape == (3, 32, 32)  # iterations 2, 4 and 5
    assert output.axis_labels[0] == "iteration"
    assert all(output.data[i].std() > 0 for i in range(3))
    assert not np.array_equal(output.data[0], output.data[2])
    assert output.data_to_world((2, 0, 0))[0] == pytest.approx(6.0)


def test_reference_layer_gives_psnr(make_napari_viewer, qtbot):
    from napari_dip.widgets.run import psnr

    viewer = make_napari_viewer()
    clean = _image((32, 32), seed=1)
    viewer.add_image(clean, name="clean")
    viewer.add_image(np.clip(clean + 0.1, 0, 1), name="noisy")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    assert widget.form.image.value.name == "noisy"  # the active layer
    assert widget.form.reference.value is None  # never chosen for the user
    widget.form.reference.value = viewer.layers["clean"]
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    expected = psnr(clean, output.data)
    assert widget.controller.last_psnr == pytest.approx(expected, abs=0.01)
    assert output.metadata["napari_dip"]["psnr_vs_reference"] == widget.controller.last_psnr
    assert output.metadata["napari_dip"]["plane_results"][0]["psnr_vs_reference"] == widget.controller.last_psnr
    assert "PSNR" in widget.status


def test_denoising_width_is_left_to_the_engine_unless_set(make_napari_viewer, qtbot):
    # Channels "auto": the fit recorrupts with fast's 3-scale network, the paper's way with
    # its 5-scale one; the record says which network ran and that no width was asked for.
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    widget.form.channels.value = 0
    _run_to_end(qtbot, widget)
    record = _output(viewer).metadata["napari_dip"]
    assert record["parameters"]["channels"] is None
    assert list(record["engine_settings"]["network"]["channels_down"]) == [16] * 3
    widget.form.network_input.value = "noise"
    _run_to_end(qtbot, widget)
    assert list(_output(viewer).metadata["napari_dip"]["engine_settings"]["network"]["channels_down"]) == [32] * 5


def test_denoising_jitter_is_left_to_the_engine_unless_set(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert widget.form.input_noise.native.text() == "auto"
    _run_to_end(qtbot, widget)
    record = _output(viewer).metadata["napari_dip"]
    assert record["parameters"]["reg_noise_std"] is None
    # chosen by the engine from the noise estimate, and recorded: with the fast preset (a
    # CPU's), no jitter but recorruption at the estimated level
    fit = record["engine_settings"]["fit"]
    assert record["engine_settings"]["noise_sigma_estimate"] > 0
    assert fit["recorrupt_sigma"] == pytest.approx(record["engine_settings"]["noise_sigma_estimate"])
    assert fit["reg_noise_std"] == 0.0
    widget.form.input_noise.value = 0.02
    _run_to_end(qtbot, widget)
    record = _output(viewer).metadata["napari_dip"]
    # a jitter asked for is the paper's way of fitting: no recorruption then
    assert record["engine_settings"]["fit"]["reg_noise_std"] == pytest.approx(0.02)
    assert record["engine_settings"]["fit"]["recorrupt_sigma"] is None


def test_the_network_input_is_chosen_in_the_form_and_recorded(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert widget.form.network_input.value == "auto"
    widget.form.network_input.value = "noise"  # the paper's way, with the fast preset
    _run_to_end(qtbot, widget)
    record = _output(viewer).metadata["napari_dip"]
    assert record["parameters"]["recorrupt"] is False
    assert record["engine_settings"]["fit"]["recorrupt_sigma"] is None
    assert record["engine_settings"]["fit"]["reg_noise_std"] >= 1 / 30
    widget = _tiny(widget, iterations=2, every=2, preset="paper")
    widget.form.network_input.value = "recorrupted"  # asked for, even with paper
    _run_to_end(qtbot, widget)
    record = _output(viewer).metadata["napari_dip"]
    assert record["parameters"]["recorrupt"] is True
    fit = record["engine_settings"]["fit"]
    assert fit["recorrupt_sigma"] == pytest.approx(record["engine_settings"]["noise_sigma_estimate"])
    # The paper network by recorruption (what auto does on CUDA) is not named as paper's way.
    assert "[DIP denoise paper recorrupted seed" in _output(viewer).name


def test_auto_on_a_cuda_machine_recorrupts_the_paper_network_from_the_widget(make_napari_viewer, qtbot,
                                                                             monkeypatch):
    import torch

    from napari_dip.engine import presets

    # auto resolved as on a CUDA machine; the fit itself runs on the CPU (device cpu).
    monkeypatch.setattr(presets, "resolve_device", lambda name="auto": torch.device("cuda:0"))
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2, preset="auto")
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    record = output.metadata["napari_dip"]
    fit = record["engine_settings"]["fit"]
    assert record["engine_settings"]["preset"] == "paper" and fit["recorrupt_sigma"] > 0
    assert fit["adam_beta2"] == 0.95
    assert output.name == "cells [DIP denoise paper recorrupted seed 0]"


def test_layer_updates_happen_on_the_main_thread(make_napari_viewer_proxy, qtbot):
    """Through napari's proxy (as plugins get the viewer), touching the viewer from the
    worker thread raises; also record the thread of every layer-data event."""
    viewer = make_napari_viewer_proxy()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(DenoiseWidget(viewer), iterations=4, every=1)
    viewer.window.add_dock_widget(widget)
    threads = []
    viewer.layers.events.inserted.connect(
        lambda event: event.value.events.set_data.connect(lambda e: threads.append(threading.current_thread()))
    )
    _run_to_end(qtbot, widget)
    assert threads and all(thread is threading.main_thread() for thread in threads)
    assert _output(viewer).metadata["napari_dip"]["stop_reason"] == "budget"


# -- outputs: names, replacing, removal ----------------------------------------------------


def test_outputs_are_named_by_settings_and_replaced_or_kept(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2, seed=1)
    _run_to_end(qtbot, widget)
    first = _output(viewer)
    assert first.name == "cells [DIP denoise fast seed 1]"
    first.colormap = "magma"  # the user's display choice survives a replacement

    widget.form.seed.value = 2
    _run_to_end(qtbot, widget)
    (replaced,) = _outputs(viewer)
    assert replaced.unique_id == first.unique_id and replaced.colormap.name == "magma"
    assert replaced.name == "cells [DIP denoise fast seed 2]"
    assert replaced.metadata["napari_dip"]["seed"] == 2

    widget.form.replace.value = False
    _run_to_end(qtbot, widget)
    names = sorted(layer.name for layer in _outputs(viewer))
    assert names == ["cells [DIP denoise fast seed 2 #2]", "cells [DIP denoise fast seed 2]"]


def test_a_replaced_output_of_another_shape_keeps_its_place(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    viewer.add_image(_image((32, 32), seed=3), name="on top")
    widget.form.image.value = next(c for c in widget.form.image.choices if c is not None and c.name == "cells")
    widget.form.keep_snapshots.value = True  # one more axis: a new layer, in the old one's place
    _run_to_end(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells [DIP denoise fast seed 0]", "on top"]
    assert _output(viewer).data.shape == (1, 32, 32)


def test_a_failed_run_leaves_the_previous_output_alone(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.errors import DeviceMemoryError

    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    before = np.array(_output(viewer).data)

    def no_memory(*args, **kwargs):
        raise DeviceMemoryError("a 32x32 image needs about 9.0 GiB on cpu")

    monkeypatch.setattr("napari_dip.restore.iter_restore", no_memory)
    monkeypatch.setattr(TOAST, lambda message: None)
    _run_to_end(qtbot, widget)
    np.testing.assert_array_equal(_output(viewer).data, before)
    assert _output(viewer).metadata["napari_dip"]["stop_reason"] == "budget"


def test_removing_the_output_layer_stops_the_run_with_one_message(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 1, timeout=WAIT_MS)
    viewer.layers.remove(_output(viewer))
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    qtbot.wait(200)  # snapshots in flight must not repeat the message
    assert len(messages) == 1 and "removed" in messages[0]
    assert "removed" in widget.status
    assert run.done_iterations < 5000
    assert [layer.name for layer in viewer.layers] == ["cells"]


def test_removing_the_input_mid_run_does_not_pick_the_output(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=8, every=2)
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 1, timeout=WAIT_MS)
    being_written = _output(viewer).name
    assert being_written not in [c.name for c in widget.form.image.choices if c is not None]
    viewer.layers.remove("cells")
    assert widget.form.image.value is None  # not the output being written
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = _output(viewer)
    assert output.metadata["napari_dip"]["iterations_run"] == 8
    assert widget.form.image.value is None  # nor the finished output
    # Run again: nothing restores the restoration; the status line says why.
    widget.start()
    assert widget.run_state is None
    assert "choose an Image layer" in widget.status
    assert messages and len(_outputs(viewer)) == 1


def test_closing_the_viewer_during_a_run_stops_the_worker(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 1, timeout=WAIT_MS)
    worker = run.worker
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT_MS)
    assert run.closed and run.stop_reason == "closed"
    assert run.done_iterations < 5000
    assert run.pbar is None
    qtbot.wait(100)
    assert messages == []  # closing removes the output layer too, which is no news


# -- errors: one short notification, the details in the status line -----------------------


def test_the_status_line_shows_the_current_error(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.widgets.controller import TOAST_LENGTH

    viewer = make_napari_viewer()
    viewer.add_image(_image((8, 8)), name="tiny")
    widget = _tiny(_dock(viewer, InpaintWidget))
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget.start()  # no Labels layer yet
    assert widget.run_state is None and "Labels layer" in widget.status
    viewer.add_labels(np.ones((8, 8), np.uint8), name="holes")
    widget.form.image.value = viewer.layers["tiny"]
    _run_to_end(qtbot, widget)  # fails in the worker: too small
    assert widget.status.startswith("Failed") and "smallest side" in widget.status
    # A wrong-shape mask: the status line shows this error, not the previous run's.
    viewer.add_image(_image((32, 32)), name="photo")
    widget.form.image.value = viewer.layers["photo"]
    messages.clear()
    widget.start()
    assert widget.run_state is None
    assert "shape (8, 8)" in widget.status and "(32, 32)" in widget.status
    assert "smallest side" not in widget.status
    assert len(messages) == 1 and len(messages[0]) <= TOAST_LENGTH + len("napari-dip Inpaint: ")
    assert widget.controls.status.native.wordWrap()
    assert [layer.name for layer in viewer.layers] == ["tiny", "holes", "photo"]
    assert widget.controls.run_button.enabled


def test_too_small_image_fails_cleanly_in_the_worker(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((8, 8)), name="tiny")
    widget = _tiny(_dock(viewer, DenoiseWidget))
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    _run_to_end(qtbot, widget)
    assert len(messages) == 1 and "smallest side" in widget.status
    # No output layer is left behind; the viewer still works.
    assert [layer.name for layer in viewer.layers] == ["tiny"]
    assert widget.controls.run_button.enabled
    viewer.add_image(_image((32, 32)), name="next")
    widget.form.image.value = viewer.layers["next"]
    _run_to_end(qtbot, widget)
    assert _output(viewer).metadata["napari_dip"]["input_layer"] == "next"


def test_out_of_memory_is_reported(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.errors import DeviceMemoryError

    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="big")
    widget = _tiny(_dock(viewer, DenoiseWidget))

    def no_memory(*args, **kwargs):
        raise DeviceMemoryError("a 32x32 image needs about 9.0 GiB on cpu")

    monkeypatch.setattr("napari_dip.restore.iter_restore", no_memory)
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    _run_to_end(qtbot, widget)
    assert messages and "GiB" in messages[0] and "GiB" in widget.status
    assert [layer.name for layer in viewer.layers] == ["big"]


def test_an_error_on_a_later_plane_keeps_the_planes_already_restored(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    engine, _calls = _scripted_engine(stop_at=4, reason="budget", fail_on_plane=1)
    monkeypatch.setattr("napari_dip.restore.iter_restore_planes", _scripted_planes(engine))
    widget, messages = _denoise_every_plane(viewer, qtbot, monkeypatch)
    assert len(messages) == 1 and "cannot be restored" in widget.status
    output = _output(viewer)
    assert output.data[0].min() == 4.0 and output.data[1].max() == 0.0
    assert output.metadata["napari_dip"]["stop_reason"] == "error"
    assert "cannot be restored" in output.metadata["napari_dip"]["error"]
    assert widget.controls.run_button.enabled


def test_a_bug_in_the_worker_is_not_reported_as_finished(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    engine, _calls = _scripted_engine(stop_at=6, reason="budget", crash_at=4)
    monkeypatch.setattr("napari_dip.restore.iter_restore", engine)
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=6, every=2)
    # napari re-raises a worker's exception in the main thread (its traceback notification)
    with qtbot.capture_exceptions() as exceptions:
        _run_to_end(qtbot, widget)
    assert [type(e[1]) for e in exceptions] == [KeyError]
    assert widget.status.startswith("Stopped by an error: internal error: KeyError")
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["stop_reason"] == "error" and "KeyError" in meta["error"]
    assert meta["iterations_run"] == 2
    assert messages == []  # no second notification besides napari's
    assert widget.controls.run_button.enabled


# -- blank planes and the engine's warnings -------------------------------------------------


def test_constant_planes_of_a_stack_are_copied_through(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)])
    stack[0] = 0.25  # before the output layer exists
    stack[2] = 0.0  # an empty slice between two restored ones
    viewer.add_image(stack, name="zstack")
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    widget.form.planes.value = PLANES_ALL
    statuses = _statuses(widget, monkeypatch)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = _output(viewer)
    assert (output.data[0] == 0.25).all() and (output.data[2] == 0.0).all()
    assert output.data[1].std() > 0 and output.data[3].std() > 0
    meta = output.metadata["napari_dip"]
    assert meta["constant_planes"] == [[0], [2]]
    assert meta["stop_reason"] == "budget" and meta["iterations_run"] == 4
    assert [p["stop_reason"] for p in meta["plane_results"]] == ["constant", "budget", "constant", "budget"]
    assert run.progress_count == run.progress_total == 4  # the bar counts planes and reaches its end
    assert widget.status.startswith("Finished")
    assert "2 constant planes copied through unchanged (0, 2)" in widget.status
    assert any(text.startswith("plane 2 is constant: copied through") for text in statuses), statuses
    assert messages == []


def test_a_constant_plane_is_enlarged_unchanged_by_super_resolution(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), dtype=np.uint8), np.full((32, 32), 7, np.uint8)])
    viewer.add_image(stack, name="frames")
    widget = _dock(viewer, SuperResolveWidget)
    widget.form.factor.value = 2
    _tiny(widget, iterations=2, every=2)
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.data.shape == (2, 64, 64) and (output.data[1] == 7).all()
    assert output.metadata["napari_dip"]["constant_planes"] == [[1]]


def test_a_constant_image_is_refused_with_a_clear_message(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="black")
    messages = []
    monkeypatch.setattr(TOAST, messages.append)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    assert widget.status.startswith("Failed: the image is constant")
    assert len(messages) == 1 and "constant" in messages[0]
    assert [layer.name for layer in viewer.layers] == ["black"]
    # A stack of blank planes only: no output that merely copies the input.
    viewer.add_image(np.full((3, 32, 32), 9, np.uint16), name="blank stack")
    widget.form.image.value = viewer.layers["blank stack"]
    widget.form.planes.value = PLANES_ALL
    messages.clear()
    _run_to_end(qtbot, widget)
    assert widget.status == "Failed: every plane of 'blank stack' is constant: there is nothing to restore"
    assert len(messages) == 1
    assert [layer.name for layer in viewer.layers] == ["black", "blank stack"]


def _inverted_mask(shape=(32, 32)):
    """Holes everywhere except a 10-pixel margin on two sides: about 90 % of the image."""
    mask = np.ones(shape, np.uint8)
    mask[..., :3, :] = 0
    mask[..., :, :1] = 0
    return mask


def test_an_inverted_mask_warning_reaches_the_user_once(make_napari_viewer, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.add_image(np.stack([_image((32, 32), seed=i) for i in range(2)]), name="photos")
    viewer.add_labels(_inverted_mask(), name="holes")  # one mask for both planes
    warned, relayed, errors = [], [], []
    monkeypatch.setattr(WARNING_TOAST, warned.append)
    monkeypatch.setattr(TOAST, errors.append)
    monkeypatch.setattr(notification_manager, "receive_warning", lambda *args: relayed.append(args))
    widget = _tiny(_dock(viewer, InpaintWidget), iterations=2, every=2)
    widget.form.planes.value = PLANES_ALL
    statuses = _statuses(widget, monkeypatch)
    _run_to_end(qtbot, widget)
    # One short notification, napari's warning relay not used a second time.
    assert len(warned) == 1 and "probably inverted" in warned[0] and len(warned[0]) <= 100
    assert not [args for args in relayed if "inverted" in str(args[0])]
    assert errors == []
    # In the status line from the first update to the end, once each time.
    assert widget.status.startswith("Finished") and widget.status.count("probably inverted") == 1
    assert "tick 'mask marks known pixels'" in widget.status  # the widget's words, not the CLI's
    assert any("iteration" in text and "probably inverted" in text for text in statuses)
    meta = _output(viewer).metadata["napari_dip"]
    (text,) = meta["warnings"]  # the stack's masks are checked together: one warning
    assert "probably inverted" in text
    assert meta["engine_settings"]["hole_fraction"] > 0.85 and meta["mask_marks"] == "holes"

    # Marked as known pixels, the same mask draws no warning.
    widget.form.mask_known.value = True
    warned.clear()
    _run_to_end(qtbot, widget)
    assert warned == [] and "warning" not in widget.status
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["warnings"] == [] and meta["mask_marks"] == "known"


# -- progress: automatic stops and the ETA ----------------------------------------------


def test_an_early_automatic_stop_is_recorded_and_the_eta_counts_to_it(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.float32), name="stack")
    engine, calls = _scripted_engine(stop_at=4, reason="wmv", expected_stop=7, best=2)
    monkeypatch.setattr("napari_dip.restore.iter_restore_planes", _scripted_planes(engine))
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=100, every=2)
    statuses = _statuses(widget, monkeypatch)
    widget.form.planes.value = PLANES_ALL
    widget.form.stopping.value = "wmv"
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    meta = _output(viewer).metadata["napari_dip"]
    assert meta["stop_reason"] == "wmv"
    assert meta["iterations_run"] == 8  # 4 per plane, not the budget of 100
    outcomes = [(p["plane"], p["iterations_run"], p["stop_reason"], p["best_iteration"]) for p in meta["plane_results"]]
    assert outcomes == [([0], 4, "wmv", 2), ([1], 4, "wmv", 2)]
    assert run.progress_count == run.progress_total == 2  # both planes count as complete
    assert all(call["stopping"] == "wmv" for call in calls) and len(calls) == 2
    assert all(call["snapshot_seconds"] == 2.0 for call in calls)  # first feedback within seconds
    np.testing.assert_array_equal(_output(viewer).data, np.full((2, 32, 32), 4.0))
    # Mid-plane, the ETA counts to the expected stop (7), not to the budget of 100.
    assert any("(stop ~7) for plane 1/2" in text for text in statuses), statuses


# -- the form ------------------------------------------------------------------------------


def test_layer_boxes_follow_added_removed_and_renamed_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _dock(viewer, InpaintWidget)
    form = widget.form
    assert form.image.value is None and form.mask.value is None
    a = viewer.add_image(_image((32, 32)), name="a")
    assert form.image.value.name == "a"  # the first image is picked up
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="m")
    viewer.add_image(_image((32, 32)), name="b")
    assert {c.name for c in form.image.choices if c is not None} == {"a", "b"}
    assert form.mask.value.name == "m"
    assert form.image.value.name == "a"  # a new layer does not take over the choice
    a.name = "renamed"
    assert form.image.value.name == "renamed" and form.image.native.currentText() == "renamed"
    viewer.layers.remove("b")
    assert form.image.value.name == "renamed"
    viewer.layers.remove("renamed")
    assert form.image.value is None
    assert form.reference.value is None


def test_outputs_are_offered_but_never_picked_for_the_user(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    other = _dock(viewer, SuperResolveWidget)
    output = _output(viewer)
    viewer.layers.selection.active = output
    assert other.form.image.value.name == "cells"
    # An explicit choice is allowed (to super-resolve a denoised image).
    other.form.image.value = next(c for c in other.form.image.choices if c is not None and c.name == output.name)
    assert other.form.image.value.name == output.name


def test_advanced_section_shows_the_preset_defaults(make_napari_viewer):
    from napari_dip.engine.presets import settings_for

    viewer = make_napari_viewer()
    widget = _dock(viewer, SuperResolveWidget)
    form = widget.form
    assert form.preset.choices == ("auto", "fast", "paper")
    assert not widget.advanced.isExpanded()  # folded away
    for preset in ("fast", "paper"):
        form.preset.value = preset
        form.factor.value = 8
        net, fit = settings_for("super-resolve", preset, factor=8)
        assert form.iterations.value == fit.iterations
        assert form.input_noise.value == pytest.approx(fit.reg_noise_std, abs=1e-4)
        assert form.channels.value == net.channels_down[0]
    form.device.value = "cpu"
    form.preset.value = "auto"
    assert form.choices().preset_resolved == "fast"  # auto is the fast preset on a CPU
    assert form.channels.value == settings_for("super-resolve", "fast", factor=8)[0].channels_down[0]
    assert form.device_info.value.startswith("Runs on cpu")
    # Denoising leaves the width to the engine (auto), since its network follows the network
    # input: fast's 3-scale one when recorrupting, its 5-scale one otherwise.
    denoise = _dock(viewer, DenoiseWidget).form
    denoise.device.value, denoise.preset.value = "cpu", "auto"
    assert denoise.channels.value == 0 and denoise.channels.native.text() == "auto"
    assert denoise.choices().channels is None and form.channels.value == 48
    denoise.channels.value = 24
    assert denoise.choices().channels == 24
    # fast's x4 schedule is shorter than the paper's (presets.SCHEDULE_CHANGES); the form
    # shows the budget of the preset and factor chosen.
    form.factor.value = 4
    assert form.iterations.value == 800
    form.preset.value = "paper"
    assert form.iterations.value == 2000
    inpaint = _dock(viewer, InpaintWidget).form
    inpaint.device.value, inpaint.preset.value = "cpu", "auto"
    assert inpaint.iterations.value == 1000


def test_device_choices_are_the_devices_that_exist(make_napari_viewer):
    from napari_dip.engine.devices import available_devices

    viewer = make_napari_viewer()
    widget = _dock(viewer, DenoiseWidget)
    assert list(widget.form.device.choices) == available_devices()


def test_the_chosen_device_is_warmed_up_while_the_user_chooses(make_napari_viewer, monkeypatch):
    from napari_dip.engine import warm
    from napari_dip.engine.devices import resolve_device

    started = []
    monkeypatch.setattr(warm, "start_warm_up", started.append)
    viewer = make_napari_viewer()
    widget = _dock(viewer, DenoiseWidget)
    assert started == [resolve_device(widget.form.device.value)]
    widget.form.device.value = "cpu" if widget.form.device.value == "auto" else "auto"
    assert started[1:] == [resolve_device(widget.form.device.value)]  # the device chosen now


def _pretend_cuda_starts(monkeypatch, stage):
    """As on a GPU machine whose CUDA has not started: a warm-up, once asked for, is in
    ``stage["now"]``; naming the card is recorded (it would start CUDA on the UI thread)."""
    import torch

    # Modules that bind resolve_device by name when first imported: imported first, or one
    # imported while the stand-in is in place would keep it for the rest of the run (later
    # fits then asked a CPU-only torch for CUDA when this test ran first).
    import napari_dip.engine.fit  # noqa: F401
    import napari_dip.engine.presets  # noqa: F401
    import napari_dip.restore  # noqa: F401
    from napari_dip.engine import devices, warm

    gpu = torch.device("cuda", 0)
    started, described = [], []
    monkeypatch.setattr(devices, "cuda_start_pending", lambda name="auto": stage["now"] != "done")
    monkeypatch.setattr(devices, "resolve_device", lambda name="auto": gpu)
    monkeypatch.setattr(devices, "describe_device", lambda name="auto": described.append(name) or "cuda:0: Card, 80.0 GiB")
    monkeypatch.setattr(warm, "start_warm_up", started.append)
    monkeypatch.setattr(warm, "state", lambda device: stage["now"] if device in started else None)
    return described


def test_a_gpu_starting_in_the_background_is_named_once_it_has_started(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.engine import warm

    stage = {"now": "running"}
    described = _pretend_cuda_starts(monkeypatch, stage)
    viewer = make_napari_viewer()
    widget = _dock(viewer, DenoiseWidget)
    line = widget.form.device_info
    # The warm-up was started before the line looked: it waits instead of naming the card.
    assert line.value == "Runs on cuda:0: a CUDA GPU, starting in the background" and described == []
    qtbot.wait(600)  # looked again, still starting
    assert "starting in the background" in line.value and described == []
    stage["now"] = "done"
    qtbot.waitUntil(lambda: line.value == "Runs on cuda:0: Card, 80.0 GiB", timeout=2000)
    # A warm-up that failed says why instead.
    stage["now"] = "failed"
    monkeypatch.setitem(warm.failures, "cuda:0", "RuntimeError: no kernel image")
    widget.form.update_device_info()
    assert line.value == "cuda:0 did not start: RuntimeError: no kernel image"


def test_a_gpu_that_never_finishes_starting_is_not_watched_for_ever(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.engine import warm

    monkeypatch.setattr(warm, "WAIT_SECONDS", 0.4)
    _pretend_cuda_starts(monkeypatch, {"now": "running"})
    viewer = make_napari_viewer()
    widget = _dock(viewer, DenoiseWidget)
    line = widget.form.device_info
    qtbot.waitUntil(lambda: line.value == "Runs on cuda:0: a CUDA GPU, still starting after 0 s", timeout=2000)
    assert not widget.form._device_timer.isActive()


def test_the_batch_dock_leaves_a_gpu_unnamed_rather_than_start_it(make_napari_viewer, monkeypatch):
    from napari_dip.widgets.batch import BatchWidget

    described = _pretend_cuda_starts(monkeypatch, {"now": "running"})
    viewer = make_napari_viewer()
    widget = _dock(viewer, BatchWidget)
    assert widget.form.device_info.value == "Runs on cuda:0: a CUDA GPU" and described == []


@pytest.mark.parametrize("widget_class", [DenoiseWidget, SuperResolveWidget, InpaintWidget])
def test_docks_are_narrow(make_napari_viewer, qtbot, widget_class):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="a layer with a rather long name from a microscope")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="a labels layer with a long name too")
    widget = _dock(viewer, widget_class)
    widget.controls.status.value = "Stopped by an error: " + "a long explanation " * 10
    assert widget.minimumSizeHint().width() < 300
    assert widget.sizeHint().width() < 300
    widget.advanced.expand(animate=False)
    assert widget.sizeHint().width() < 300


@pytest.mark.parametrize("width", [300, 600])
def test_a_long_status_shows_every_line_and_keeps_the_dock_narrow(make_napari_viewer, qtbot, width):
    # The status line wraps: at any dock width it must be as tall as its lines, or the
    # first is cut off under the buttons (it was, in wide docks); and a long message must
    # not widen the dock.
    viewer = make_napari_viewer()
    widget = _dock(viewer, DenoiseWidget)
    widget.controls.status.value = "Stopped by an error: " + "a long explanation " * 20
    assert widget.minimumSizeHint().width() < 300 and widget.sizeHint().width() < 300
    widget.setParent(None)  # on its own, to be given a width
    qtbot.addWidget(widget)
    widget.resize(width, 1400)
    widget.show()
    qtbot.waitExposed(widget)
    label = widget.controls.status.native
    assert label.width() > 0.8 * width
    assert label.height() >= label.heightForWidth(label.width())


def _wheel(widget, steps: int = 1):
    """A wheel turn over ``widget``'s middle, as the user's mouse would send it; whether it was taken."""
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    middle = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(middle, QPointF(widget.mapToGlobal(middle.toPoint())), QPoint(0, 0), QPoint(0, -120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)
    return event.isAccepted()


@pytest.mark.parametrize("widget_class", [DenoiseWidget, BatchWidget])
def test_a_short_window_scrolls_to_run_and_the_wheel_leaves_the_settings_alone(make_napari_viewer, qtbot,
                                                                                 widget_class):
    viewer = make_napari_viewer()
    widget = _dock(viewer, widget_class)
    from napari_dip.widgets.dock import _dock_of

    assert _dock_of(widget.scroll_area) is not None  # the scroll area is in the dock, not left out
    native = getattr(widget, "native", widget)
    native.setParent(None)  # on its own, in a window shorter than the dock's column
    qtbot.addWidget(native)
    native.resize(300, 200)
    native.show()
    qtbot.waitExposed(native)
    area = widget.scroll_area
    assert area.verticalScrollBar().maximum() > 0  # Run and the status line can be scrolled to
    # Yet the dock asks for room: all of a short column, or a good share of the screen (a
    # dock docked below another was given a strip of a few lines without this).
    from napari_dip.widgets.scrolling import MINIMUM_SCREEN_SHARE

    screen = area.screen().availableGeometry().height()
    wanted = min(area.widget().minimumSizeHint().height(), int(MINIMUM_SCREEN_SHARE * screen))
    assert area.minimumSizeHint().expandedTo(area.minimumSize()).height() >= wanted > 100
    run_button = widget.controls.run_button.native if widget_class is DenoiseWidget else widget.run_button.native
    area.ensureWidgetVisible(run_button)
    assert run_button.visibleRegion().boundingRect().height() == run_button.height()

    # The column's own bar takes the wheel (a guard on it left the dock unscrollable).
    bar = area.verticalScrollBar()
    assert _wheel(bar) and bar.value() > 0
    # A wheel turn over a box the user has not clicked leaves its value and is left to the
    # parents (Qt offers an ignored wheel event from the mouse to the parents: the column).
    preset = widget.form.preset.native
    before = preset.currentIndex()
    assert not _wheel(preset)
    assert preset.currentIndex() == before
    iterations = widget.form.iterations.native
    value = iterations.value()
    assert not _wheel(iterations)
    assert iterations.value() == value
    # Once the user has clicked into it, the box takes the wheel as usual.
    native.activateWindow()
    qtbot.waitActive(native)
    iterations.setFocus()
    qtbot.waitUntil(iterations.hasFocus, timeout=2000)
    assert _wheel(iterations)
    assert iterations.value() != value


def test_a_script_that_leaves_its_docks_open_exits_cleanly():
    # An earlier version of the docks' scroll areas (f2c1e03) crashed PyQt's clean-up at
    # interpreter exit when a script left Batch and Denoise docked: both runs here failed.
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "docks_exit_check.py"
    done = subprocess.run([sys.executable, str(script), "--runs", "2"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_loss_plot_labels_its_axes(make_napari_viewer, qtbot, tmp_path):
    from napari_dip.widgets.loss_plot import LossPlot, iteration_ticks, log_ticks

    assert iteration_ticks(0, 1210) == [0, 500, 1000]
    assert log_ticks(3e-4, 0.02) == [0.001, 0.01]
    plot = LossPlot()
    qtbot.addWidget(plot)
    for iteration, loss in [(25, 0.02), (50, 0.005), (75, 0.002), (100, 0.001)]:
        plot.add(iteration, loss)
    x_ticks, y_ticks = plot.axes()
    assert [label for _v, label in x_ticks] == ["50", "100"]
    assert [label for _v, label in y_ticks] == ["1e-3", "1e-2"]
    plot.resize(260, 100)
    assert not plot.grab().toImage().isNull()  # paints without error


def test_the_displayed_axes_are_the_plane_when_the_dims_are_rolled(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)], axis=1)  # (Z, Y, X) = (32, 4, 32)
    stack[:, 0, :] = 0.25  # constant as a Z-X plane only: copied through exactly when Z-X planes are restored
    layer = viewer.add_image(stack, name="zstack", scale=(3.0, 1.0, 1.0))
    viewer.dims.order = (1, 0, 2)  # the viewer shows Z (rows) against X: planes go along Y
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    widget.form.planes.value = PLANES_ALL
    _run_to_end(qtbot, widget)
    output = _output(viewer)
    assert output.data.shape == stack.shape  # in the layer's own axis order
    assert (output.data[:, 0, :] == 0.25).all()
    assert all(output.data[:, y, :].std() > 0 for y in range(1, 4))
    np.testing.assert_allclose(output.scale, layer.scale)
    meta = output.metadata["napari_dip"]
    assert meta["constant_planes"] == [[0]] and meta["planes"] == [[0], [1], [2], [3]]
    assert meta["parameters"]["plane_axes_of_layer"] == [0, 2]
    assert meta["parameters"]["planes_along_axes_of_layer"] == [1]
    assert viewer.dims.current_step[1] == 3  # the Y slider followed the plane being written
    np.testing.assert_array_equal(layer.data, stack)  # input untouched


def test_the_plane_in_view_of_rolled_dims_is_enlarged_in_place(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)], axis=1)  # (Z, Y, X)
    layer = viewer.add_image(stack, name="zstack", scale=(2.0, 1.0, 0.5), translate=(0.0, 5.0, 0.0))
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_current_step(1, 2)
    widget = _dock(viewer, SuperResolveWidget)
    widget.form.factor.value = 2  # reloads the task's settings: made tiny afterwards
    _run_to_end(qtbot, _tiny(widget, iterations=2, every=2))
    output = _output(viewer)
    assert output.data.shape == (64, 1, 64)  # Z and X enlarged, one Y plane
    assert output.metadata["napari_dip"]["planes"] == [[2]]
    # Pixel edges line up: the output's corner pixel edge is the input's, at the plane in view.
    corner_out = output.data_to_world((-0.5, 0, -0.5))
    corner_in = layer.data_to_world((-0.5, 2, -0.5))
    np.testing.assert_allclose(corner_out, corner_in)
    np.testing.assert_allclose(output.scale, (1.0, 1.0, 0.25))


def test_a_2d_mask_cannot_serve_a_plane_of_rolled_dims(make_napari_viewer):
    from napari_dip.errors import InputError
    from napari_dip.widgets.plan import Choices, make_plan

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 4, 32), np.float32), name="zstack")
    mask = viewer.add_labels(np.zeros((4, 32), np.uint8), name="holes")
    viewer.dims.order = (1, 0, 2)
    with pytest.raises(InputError, match="other axes"):
        make_plan(viewer, Choices(task="inpaint", image=image, mask=mask))


def test_the_status_line_says_the_memory_a_fit_needs_before_it_starts(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.engine.fit import estimate_memory_bytes
    from napari_dip.engine.presets import network_for

    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="photo")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    statuses = _statuses(widget, monkeypatch)
    _run_to_end(qtbot, widget)
    expected = estimate_memory_bytes(network_for("denoise", "fast").with_width(8), 1, 32, 32) / 2**30
    starting = [text for text in statuses if text.startswith("Starting")]
    assert starting and f"the fit needs about {expected:.1f} GiB" in starting[0], statuses
