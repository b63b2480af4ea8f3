"""The Batch dock widget under Xvfb: selected layers -> output layers, a folder -> files and
a report, Cancel. Tiny fits (32x32 pixels, 4 iterations of the fast preset)."""

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_dip.widgets.batch import FOLDER, BatchWidget  # noqa: E402

pytestmark = pytest.mark.gui
WAIT_MS = 120_000


def _noisy(seed, size=32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = 0.5 + 0.3 * np.sin(xx / 4.0 + seed) * np.cos(yy / 5.0) + rng.normal(0, 0.08, (size, size))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def output_task(layer):
    return layer.metadata["napari_dip"]["task"]


def _tiny(widget):
    widget.preset.value = "fast"
    widget.iterations.value = 4
    return widget


def test_batch_widget_module_does_not_import_torch():
    code = "import sys, napari_dip.widgets.batch; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_selected_layers_become_output_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    first = viewer.add_image(_noisy(0), name="first", scale=(0.3, 0.3), translate=(5, 7), units="um",
                             colormap="magma", metadata={"sample": "A1"})
    viewer.add_image(_noisy(1), name="unselected")
    third = viewer.add_image(_noisy(2), name="third")
    viewer.layers.selection = {first, third}
    widget = _tiny(BatchWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Batch")
    widget.start()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    names = [layer.name for layer in viewer.layers]
    assert names == ["first", "unselected", "third", "first [DIP denoise fast seed 0]", "third [DIP denoise fast seed 0]"]
    output = viewer.layers["first [DIP denoise fast seed 0]"]
    # Over its input, as a task widget's output: same place, units and look; the input's
    # metadata kept beside the run's record.
    assert tuple(output.scale) == (0.3, 0.3) and tuple(output.translate) == (5, 7)
    assert tuple(str(u) for u in output.units) == tuple(str(u) for u in first.units)
    assert output.colormap.name == "magma" and output.metadata["sample"] == "A1"
    record = output.metadata["napari_dip"]
    assert record["iterations_run"] == 4 and record["input_layer"] == "first" and record["task"] == "denoise"
    assert record["preset"] == "fast" and record["batch"] and record["engine_settings"]["fit"]["seed"] == 0
    assert viewer.layers["third [DIP denoise fast seed 0]"].data.shape == (32, 32)
    assert widget.progress.value == widget.progress.max == 2
    assert widget.status.value == "finished: 2 done" and widget.run_button.enabled
    assert first.metadata == {"sample": "A1"} and tuple(first.scale) == (0.3, 0.3)


def test_a_super_resolved_layer_lies_over_its_input(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    source = viewer.add_image(_noisy(3, size=16), name="small", scale=(2.0, 2.0), translate=(1, 1))
    viewer.layers.selection = {source}
    widget = BatchWidget(viewer)
    widget.task.value = "super-resolve"
    # The factor first: choosing it loads the preset's schedule (2000 iterations) again.
    widget.form.factor.value = 2
    _tiny(widget)
    widget.start()
    widget.task.value = "denoise"  # the run keeps the task it was started with
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert output_task(viewer.layers[-1]) == "super-resolve"
    output = viewer.layers[-1]
    assert output.data.shape == (32, 32) and output.name.startswith("small [DIP super-resolve x2 fast")
    # Half the pixel size; the first output pixel's centre a quarter of an input pixel in.
    assert tuple(output.scale) == (1.0, 1.0) and tuple(output.translate) == (0.5, 0.5)


def test_a_folder_gives_files_a_report_and_cancel_stops(make_napari_viewer, qtbot, tmp_path):
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    for i in range(3):
        iio.imwrite(data / f"img{i}.png", _noisy(i))
    (data / "broken.png").write_bytes(b"no image")
    viewer = make_napari_viewer()
    widget = _tiny(BatchWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Batch")

    def shown(part):
        return part.native.isVisibleTo(widget.native)

    assert not shown(widget.folder) and not shown(widget.mask_pattern)
    widget.source.value = FOLDER
    assert shown(widget.folder) and shown(widget.out) and shown(widget.workers) and not shown(widget.mask_pattern)
    widget.folder.value, widget.out.value, widget.workers.value = data, out, 0
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert sorted(p.name for p in out.glob("img*.png")) == ["img0.png", "img1.png", "img2.png"]
    assert (out / "report.csv").exists() and (out / "report.html").exists()
    assert widget.progress.value == widget.progress.max == 4
    assert widget.status.value.startswith("finished: ") and "3 done" in widget.status.value
    assert "1 failed" in widget.status.value

    # Cancel: files not started are left; the report says so.
    more = tmp_path / "more"
    more.mkdir()
    for i in range(4):
        iio.imwrite(more / f"m{i}.png", _noisy(10 + i))
    widget.folder.value, widget.out.value = more, tmp_path / "out2"
    widget.start()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.value.startswith("cancelled: ")
    assert len(list((tmp_path / "out2").glob("m*.png"))) < 4
    assert "cancelled" in (tmp_path / "out2" / "report.csv").read_text()
    # The summary counts what the report says, files never started included.
    import csv

    with open(tmp_path / "out2" / "report.csv", newline="") as report:
        statuses = [row["status"] for row in csv.DictReader(report)]
    assert len(statuses) == 4
    for status in set(statuses):
        assert f"{statuses.count(status)} {status}" in widget.status.value


def test_stack_layers_are_restored_plane_by_plane_and_others_fail_alone(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_noisy(4), _noisy(5)])
    zstack = viewer.add_image(stack, name="zstack", scale=(3.0, 0.5, 0.5), axis_labels=("z", "y", "x"))
    four_d = viewer.add_image(np.stack([stack] * 2), name="tzc")  # two leading axes: T and Z by position
    five_d = viewer.add_image(np.stack([np.stack([stack] * 2)] * 2), name="five")  # three: not told apart
    flat = viewer.add_image(_noisy(6), name="flat")
    viewer.layers.selection = {zstack, four_d, five_d, flat}
    widget = _tiny(BatchWidget(viewer))
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.value == "finished: 3 done, 1 failed", widget.status.value
    output = viewer.layers["zstack [DIP denoise fast seed 0]"]
    assert output.data.shape == stack.shape and output.data.dtype == stack.dtype
    assert tuple(output.scale) == (3.0, 0.5, 0.5) and tuple(output.axis_labels) == ("z", "y", "x")
    record = output.metadata["napari_dip"]
    assert record["planes"] == [[0], [1]] and record["iterations_run"] == 8
    # Each plane restored on its own: the second is not a copy of the first.
    assert not np.array_equal(output.data[0], output.data[1])
    assert viewer.layers["tzc [DIP denoise fast seed 0]"].metadata["napari_dip"]["planes"] == [
        [0, 0], [0, 1], [1, 0], [1, 1]]
    assert "five [DIP" not in " ".join(layer.name for layer in viewer.layers)
    assert "flat [DIP denoise fast seed 0]" in [layer.name for layer in viewer.layers]


def test_the_batch_dock_starts_no_device_in_napari(make_napari_viewer, monkeypatch):
    # A folder's fits run in Dask's worker processes: a CUDA context here would only hold memory.
    from napari_dip.engine import warm

    started = []
    monkeypatch.setattr(warm, "start_warm_up", started.append)
    widget = BatchWidget(make_napari_viewer())
    widget.form  # the chosen task's form, built on first use
    assert started == []
