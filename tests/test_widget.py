"""The napari dock widget: streaming fits into one output layer, pause/stop, transforms,
metadata, masks from Labels, nD planes and error paths. Runs under Xvfb (pytest-xvfb).

Fits are tiny (32x32 to 48x48 pixels, 8 network channels, a handful of iterations) so the
suite stays fast on a 2-core CPU; what is checked is the plumbing, not restoration quality.
"""

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_dip._widget import (  # noqa: E402
    PLANES_ALL,
    DenoiseWidget,
    InpaintWidget,
    SuperResolveWidget,
)

pytestmark = pytest.mark.gui

WAIT_MS = 60_000


def _image(shape=(32, 32), seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    base = 0.5 + 0.4 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
    data = np.broadcast_to(base, shape) + rng.normal(0, 0.1, shape)
    data = np.clip(data, 0, 1)
    if dtype == np.uint8:
        return (data * 255).astype(np.uint8)
    return data.astype(dtype)


def _tiny(widget, iterations=6, every=2, seed=0):
    """Make a widget's fit tiny: fast preset, 8 channels, few iterations, CPU."""
    widget.preset_box.setCurrentIndex(widget.preset_box.findData("fast"))
    widget.iterations_box.setValue(iterations)
    widget.every_box.setValue(every)
    widget.channels_box.setValue(8)
    widget.seed_box.setValue(seed)
    widget.device_box.setCurrentText("cpu")
    return widget


def _dock(viewer, widget_class):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=widget_class.__name__)
    return widget


def _run_to_end(qtbot, widget):
    widget.start()
    assert widget.run_state is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)


def _output(viewer, name):
    layers = [layer for layer in viewer.layers if layer.name == name]
    assert len(layers) == 1, [layer.name for layer in viewer.layers]
    return layers[0]


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

    updates = []
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    widget.start()
    output = _output(viewer, "cells [DIP denoise]")
    output.events.data.connect(lambda event: updates.append(1))
    seen = []
    output.events.set_data.connect(lambda event: seen.append(float(output.data.mean())))
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)

    # One output layer, created at the start, updated in place at every snapshot.
    assert added == ["cells [DIP denoise]"]
    assert len(seen) >= 3
    assert output.data.shape == (32, 32) and output.data.dtype == np.float32
    assert output.data.std() > 0
    # Same world placement and annotations as the input.
    np.testing.assert_allclose(output.data_to_world((5, 7)), before_transform)
    assert output.axis_labels == ("y", "x")
    assert tuple(str(u) for u in output.units) == tuple(str(u) for u in layer.units)
    meta = output.metadata["napari_dip"]
    assert meta["stop_reason"] == "budget"
    assert meta["iterations_run"] == 6
    assert meta["seed"] == 0
    assert meta["device"] == "cpu"
    assert meta["task"] == "denoise" and meta["preset"] == "fast"
    assert meta["parameters"]["channels"] == 8
    assert meta["parameters"]["stopping"] is None  # the engine's task default
    assert meta["engine_settings"]["fit"]["iterations"] == 6
    assert meta["napari_dip"]
    assert output.metadata["origin"] == "microscope"
    # The input is untouched.
    np.testing.assert_array_equal(layer.data, original)
    assert "napari_dip" not in layer.metadata
    assert widget.status.text().startswith("Finished")
    assert len(widget.loss_plot.losses) >= 2


def test_same_seed_gives_the_same_result(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="a")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=4, seed=5)
    _run_to_end(qtbot, widget)
    first = np.array(viewer.layers["a [DIP denoise]"].data)
    viewer.layers.remove("a [DIP denoise]")
    widget.image_picker.set_layer(viewer.layers["a"])
    _run_to_end(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["a [DIP denoise]"].data, first)


def test_pause_resume_and_stop_keep_the_latest_result(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 2, timeout=WAIT_MS)

    widget.toggle_pause()
    qtbot.waitUntil(lambda: run.worker.is_paused and widget.pause_button.text() == "Resume", timeout=WAIT_MS)
    qtbot.wait(50)  # a snapshot already in flight may still arrive
    received = run.snapshots_received
    qtbot.wait(400)
    assert run.snapshots_received == received, "snapshots kept coming while paused"

    widget.toggle_pause()
    qtbot.waitUntil(lambda: run.snapshots_received > received, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget.pause_button.text() == "Pause", timeout=WAIT_MS)

    widget.stop()
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = viewer.layers["cells [DIP denoise]"]
    meta = output.metadata["napari_dip"]
    assert meta["stop_reason"] == "user"
    assert 2 <= meta["iterations_run"] < 5000
    # how the fit was made is known although the engine never sent its final snapshot
    assert meta["engine_settings"]["device"] == "cpu" and meta["engine_settings"]["fit"]["seed"] == 0
    assert output.data.std() > 0  # the latest result is kept
    assert widget.run_button.isEnabled() and not widget.stop_button.isEnabled()


def test_super_resolution_scales_and_shifts_the_output(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_image(_image((24, 32), dtype=np.uint8), name="tissue", scale=(2.0, 3.0), translate=(10.0, 20.0))
    widget = _tiny(_dock(viewer, SuperResolveWidget), iterations=4, every=2)
    widget.factor_box.setCurrentText("2")
    _tiny(widget, iterations=4, every=2)  # choosing the factor reloads the preset's values
    _run_to_end(qtbot, widget)
    output = viewer.layers["tissue [DIP super-resolve x2]"]
    assert output.data.shape == (48, 64) and output.data.dtype == np.uint8
    np.testing.assert_allclose(output.scale, (1.0, 1.5))
    # Pixel edges line up: input edge (-0.5, -0.5) and (23.5, 31.5) match the output's.
    np.testing.assert_allclose(output.data_to_world((-0.5, -0.5)), layer.data_to_world((-0.5, -0.5)))
    np.testing.assert_allclose(output.data_to_world((47.5, 63.5)), layer.data_to_world((23.5, 31.5)))
    assert output.metadata["napari_dip"]["factor"] == 2


def test_inpainting_takes_its_mask_from_a_labels_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = _image((32, 32))
    holes = np.zeros((32, 32), np.uint8)
    holes[10:16, 12:20] = 1
    viewer.add_image(image, name="photo")
    labels = viewer.add_labels(holes.copy(), name="holes")
    widget = _tiny(_dock(viewer, InpaintWidget), iterations=4, every=2)
    assert widget.mask_picker.layer().name == "holes"
    widget.image_picker.set_layer(viewer.layers["photo"])
    _run_to_end(qtbot, widget)
    output = viewer.layers["photo [DIP inpaint]"]
    assert output.data.shape == (32, 32)
    assert output.metadata["napari_dip"]["engine_settings"]["forward_model"]
    np.testing.assert_array_equal(labels.data, holes)


def test_wrong_mask_shape_is_reported_and_nothing_runs(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="photo")
    viewer.add_labels(np.ones((20, 20), np.uint8), name="holes")
    widget = _tiny(_dock(viewer, InpaintWidget))
    messages = []
    monkeypatch.setattr("napari_dip._widget.show_error", messages.append)
    widget.image_picker.set_layer(viewer.layers["photo"])
    widget.start()
    assert widget.run_state is None
    assert messages and "shape" in messages[0] and "(32, 32)" in messages[0]
    assert [layer.name for layer in viewer.layers] == ["photo", "holes"]
    assert widget.run_button.isEnabled()


def test_too_small_image_fails_cleanly_in_the_worker(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((8, 8)), name="tiny")
    widget = _tiny(_dock(viewer, DenoiseWidget))
    messages = []
    monkeypatch.setattr("napari_dip._widget.show_error", messages.append)
    _run_to_end(qtbot, widget)
    assert messages and "smallest side" in messages[0]
    # The empty output layer is removed again; the viewer still works.
    assert [layer.name for layer in viewer.layers] == ["tiny"]
    assert widget.run_button.isEnabled()
    viewer.add_image(_image((32, 32)), name="next")
    widget.image_picker.set_layer(viewer.layers["next"])
    _run_to_end(qtbot, widget)
    assert "next [DIP denoise]" in viewer.layers


def test_out_of_memory_is_reported(make_napari_viewer, qtbot, monkeypatch):
    from napari_dip.errors import DeviceMemoryError

    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="big")
    widget = _tiny(_dock(viewer, DenoiseWidget))

    def no_memory(*args, **kwargs):
        raise DeviceMemoryError("a 32x32 image needs about 9.0 GiB on cpu")

    monkeypatch.setattr("napari_dip.restore.iter_restore", no_memory)
    messages = []
    monkeypatch.setattr("napari_dip._widget.show_error", messages.append)
    _run_to_end(qtbot, widget)
    assert messages and "GiB" in messages[0]
    assert [layer.name for layer in viewer.layers] == ["big"]


def test_removing_the_output_layer_stops_the_run(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
    messages = []
    monkeypatch.setattr("napari_dip._widget.show_error", messages.append)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 1, timeout=WAIT_MS)
    viewer.layers.remove("cells [DIP denoise]")
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    assert messages and "removed" in messages[0]
    assert run.done_iterations < 5000
    assert [layer.name for layer in viewer.layers] == ["cells"]


def test_removing_the_input_layer_does_not_lose_the_result(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=8, every=2)
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: run.snapshots_received >= 1, timeout=WAIT_MS)
    viewer.layers.remove("cells")
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    output = viewer.layers["cells [DIP denoise]"]
    assert output.metadata["napari_dip"]["iterations_run"] == 8
    assert widget.image_picker.layer().name == "cells [DIP denoise]"


def test_closing_the_viewer_during_a_run_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5000, every=1)
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


def test_all_planes_of_a_stack_go_into_one_nd_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(3)])
    viewer.add_image(stack, name="zstack", scale=(4.0, 1.0, 1.0))
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert widget.planes_box.isEnabled()
    widget.planes_box.setCurrentText(PLANES_ALL)
    _run_to_end(qtbot, widget)
    output = viewer.layers["zstack [DIP denoise]"]
    assert output.data.shape == (3, 32, 32)
    assert all(output.data[i].std() > 0 for i in range(3))
    np.testing.assert_allclose(output.scale, (4.0, 1.0, 1.0))
    meta = output.metadata["napari_dip"]
    assert meta["iterations_run"] == 6 and meta["planes"] == [[0], [1], [2]]


def test_plane_in_view_restores_only_the_shown_plane(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_image((32, 32), seed=i) for i in range(4)])
    layer = viewer.add_image(stack, name="zstack", scale=(2.0, 1.0, 1.0), translate=(10.0, 0.0, 0.0))
    viewer.dims.set_current_step(0, 2)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    _run_to_end(qtbot, widget)
    output = viewer.layers["zstack [DIP denoise]"]
    assert output.data.shape == (1, 32, 32)
    # Drawn at plane 2 of the input.
    np.testing.assert_allclose(output.data_to_world((0, 3, 4)), layer.data_to_world((2, 3, 4)))
    assert output.metadata["napari_dip"]["planes"] == [[2]]


def test_rgb_stays_rgb(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgb = np.stack([_image((32, 32), seed=i, dtype=np.uint8) for i in range(3)], axis=-1)
    viewer.add_image(rgb, name="colour")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert not widget.planes_box.isEnabled()
    _run_to_end(qtbot, widget)
    output = viewer.layers["colour [DIP denoise]"]
    assert output.rgb and output.data.shape == (32, 32, 3) and output.data.dtype == np.uint8


def test_kept_snapshots_stack_along_an_iteration_axis(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=5, every=2)
    widget.keep_snapshots.setChecked(True)
    _run_to_end(qtbot, widget)
    output = viewer.layers["cells [DIP denoise]"]
    assert output.data.shape == (3, 32, 32)  # iterations 2, 4 and 5
    assert output.axis_labels[0] == "iteration"
    assert all(output.data[i].std() > 0 for i in range(3))
    assert not np.array_equal(output.data[0], output.data[2])
    assert output.data_to_world((2, 0, 0))[0] == pytest.approx(6.0)


def test_reference_layer_gives_psnr(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    clean = _image((32, 32), seed=1)
    viewer.add_image(clean, name="clean")
    viewer.add_image(np.clip(clean + 0.1, 0, 1), name="noisy")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    widget.image_picker.set_layer(viewer.layers["noisy"])
    widget.reference_picker.set_layer(viewer.layers["clean"])
    _run_to_end(qtbot, widget)
    assert "PSNR" in widget.status.text() or widget.status.text().startswith("Finished")
    # The last PSNR is computed against the clean image.
    from napari_dip._widget import _psnr

    expected = _psnr(clean, viewer.layers["noisy [DIP denoise]"].data)
    assert widget.last_psnr == pytest.approx(expected, abs=0.01)
    assert viewer.layers["noisy [DIP denoise]"].metadata["napari_dip"]["psnr_vs_reference"] == widget.last_psnr


def test_pickers_follow_added_removed_and_renamed_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _dock(viewer, InpaintWidget)
    assert widget.image_picker.count() == 0
    a = viewer.add_image(_image((32, 32)), name="a")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="m")
    viewer.add_image(_image((32, 32)), name="b")
    assert [widget.image_picker.itemText(i) for i in range(widget.image_picker.count())] == ["b", "a"]
    assert widget.mask_picker.layer().name == "m"
    widget.image_picker.set_layer(a)
    a.name = "renamed"
    assert widget.image_picker.currentText() == "renamed"
    assert widget.image_picker.layer() is a
    viewer.layers.remove("b")
    assert widget.image_picker.layer() is a
    viewer.layers.remove("renamed")
    assert widget.image_picker.count() == 0 and widget.image_picker.layer() is None
    assert widget.reference_picker.layer() is None


def test_advanced_section_shows_the_preset_defaults(make_napari_viewer):
    from napari_dip.presets import settings_for

    viewer = make_napari_viewer()
    widget = _dock(viewer, SuperResolveWidget)
    for preset in ("fast", "paper"):
        widget.preset_box.setCurrentIndex(widget.preset_box.findData(preset))
        widget.factor_box.setCurrentText("8")
        net, fit = settings_for("super-resolve", preset, factor=8)
        assert widget.iterations_box.value() == fit.iterations
        assert widget.noise_box.value() == pytest.approx(fit.reg_noise_std, abs=1e-4)
        assert widget.channels_box.value() == net.channels_down[0]
    assert widget.device_info.text().startswith("Runs on ")


def test_denoising_jitter_is_left_to_the_engine_unless_set(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=2, every=2)
    assert widget.noise_box.text() == "auto"
    _run_to_end(qtbot, widget)
    record = viewer.layers[-1].metadata["napari_dip"]
    assert record["parameters"]["reg_noise_std"] is None
    # chosen by the engine from the noise estimate, and recorded
    assert record["engine_settings"]["fit"]["reg_noise_std"] >= 1 / 30
    assert record["engine_settings"]["noise_sigma_estimate"] > 0
    widget.noise_box.setValue(0.02)
    _run_to_end(qtbot, widget)
    record = viewer.layers[-1].metadata["napari_dip"]
    assert record["engine_settings"]["fit"]["reg_noise_std"] == pytest.approx(0.02)


def test_layer_updates_happen_on_the_main_thread(make_napari_viewer_proxy, qtbot):
    """Through napari's proxy (as plugins get the viewer), touching the viewer from the
    worker thread raises; also record the thread of every layer-data event."""
    viewer = make_napari_viewer_proxy()
    viewer.add_image(_image((32, 32)), name="cells")
    widget = _tiny(DenoiseWidget(viewer), iterations=4, every=1)
    viewer.window.add_dock_widget(widget)
    threads = []
    widget.start()
    output = [layer for layer in viewer.layers if layer.name == "cells [DIP denoise]"][0]
    output.events.set_data.connect(lambda event: threads.append(threading.current_thread()))
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    assert threads and all(thread is threading.main_thread() for thread in threads)
    assert output.metadata["napari_dip"]["stop_reason"] == "budget"


def _scripted_engine(stop_at, reason, fail_on_plane=None):
    """A stand-in for iter_restore that stops early (as automatic stopping does) or fails."""
    from napari_dip.errors import InputError
    from napari_dip.fit import Snapshot

    calls = []

    def iter_restore(task, image, *, snapshot_every, iterations, **kwargs):
        calls.append(kwargs)
        if fail_on_plane is not None and len(calls) == fail_on_plane + 1:
            raise InputError("this plane cannot be restored")

        def snapshots():
            for it in range(snapshot_every, stop_at + 1, snapshot_every):
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
                    settings={"device": "cpu", "fit": {"seed": 0}} if done else {},
                )

        return snapshots()

    return iter_restore, calls


def test_an_early_automatic_stop_is_recorded(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.float32), name="stack")
    engine, calls = _scripted_engine(stop_at=4, reason="wmv")
    monkeypatch.setattr("napari_dip.restore.iter_restore", engine)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=100, every=2)
    widget.planes_box.setCurrentText(PLANES_ALL)
    widget.stopping_box.setCurrentIndex(widget.stopping_box.findData("wmv"))
    widget.start()
    run = widget.run_state
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=WAIT_MS)
    meta = viewer.layers["stack [DIP denoise]"].metadata["napari_dip"]
    assert meta["stop_reason"] == "wmv"
    assert meta["iterations_run"] == 8  # 4 per plane, not the budget of 100
    assert run.progress_count == run.total_iterations == 200  # both planes count as complete
    assert all(call["stopping"] == "wmv" for call in calls) and len(calls) == 2
    np.testing.assert_array_equal(viewer.layers["stack [DIP denoise]"].data, np.full((2, 32, 32), 4.0))


def test_an_error_on_a_later_plane_keeps_the_planes_already_restored(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 32, 32), np.float32), name="stack")
    engine, _calls = _scripted_engine(stop_at=4, reason="budget", fail_on_plane=1)
    monkeypatch.setattr("napari_dip.restore.iter_restore", engine)
    messages = []
    monkeypatch.setattr("napari_dip._widget.show_error", messages.append)
    widget = _tiny(_dock(viewer, DenoiseWidget), iterations=4, every=2)
    widget.planes_box.setCurrentText(PLANES_ALL)
    _run_to_end(qtbot, widget)
    assert messages and "cannot be restored" in messages[0]
    output = viewer.layers["stack [DIP denoise]"]
    assert output.data[0].min() == 4.0 and output.data[1].max() == 0.0
    assert output.metadata["napari_dip"]["stop_reason"] == "error"
    assert "cannot be restored" in output.metadata["napari_dip"]["error"]
    assert widget.run_button.isEnabled()
