"""The denoise widget's noise-model choice reaches the engine and the output's record."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_dip.widgets.dock import DenoiseWidget, SuperResolveWidget  # noqa: E402
from tiny import photon_limited, run_widget  # noqa: E402

pytestmark = pytest.mark.gui


def test_noise_choice_reaches_the_engine_and_the_record(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(photon_limited(), name="cells")
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="denoise")
    form = widget.form
    assert form.noise.value == "auto"
    form.device.value = "cpu"
    form.preset.value = "fast"
    form.iterations.value = 3
    form.update_every.value = 3
    form.channels.value = 8
    form.noise.value = "poisson-gaussian"
    run_widget(qtbot, widget)
    (output,) = [layer for layer in viewer.layers if "napari_dip" in layer.metadata]
    record = output.metadata["napari_dip"]
    assert record["parameters"]["noise"] == "poisson-gaussian"
    noise = record["engine_settings"]["noise"]
    assert noise["model"] == "poisson-gaussian" and noise["requested"] == "poisson-gaussian"
    assert noise["a"][0] > 0  # estimated, in the image's units
    assert output.data.dtype == np.uint16
    # Gaussian asked for: recorded as such.
    form.noise.value = "gaussian"
    run_widget(qtbot, widget)
    (output,) = [layer for layer in viewer.layers if "napari_dip" in layer.metadata]
    assert output.metadata["napari_dip"]["engine_settings"]["noise"]["model"] == "gaussian"


def test_only_the_denoise_widget_offers_a_noise_model(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = SuperResolveWidget(viewer)
    assert widget.form.noise is None
