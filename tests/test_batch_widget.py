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
    first = viewer.add_image(_noisy(0), name="first")
    viewer.add_image(_noisy(1), name="unselected")
    third = viewer.add_image(_noisy(2), name="third")
    viewer.layers.selection = {first, third}
    widget = _tiny(BatchWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Batch")
    widget.start()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    names = [layer.name for layer in viewer.layers]
    assert names == ["first", "unselected", "third", "first (denoise)", "third (denoise)"]
    record = viewer.layers["first (denoise)"].metadata["napari_dip"]
    assert record["iterations_run"] == 4 and record["source_layer"] == "first" and record["task"] == "denoise"
    assert viewer.layers["third (denoise)"].data.shape == (32, 32)
    assert widget.progress.value == widget.progress.max == 2
    assert widget.status.value == "finished: 2 done" and widget.run_button.enabled


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
