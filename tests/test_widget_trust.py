"""The widget's optional trust layers (issue 11): the runs' spread and the residual, named
after the input, next to the output, recording how they were made."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_dip.residual import noise_residual  # noqa: E402
from napari_dip.widgets.dock import DenoiseWidget, SuperResolveWidget  # noqa: E402
from tiny import photon_limited, run_widget  # noqa: E402

pytestmark = pytest.mark.gui


def _tiny(form):
    form.device.value = "cpu"
    form.preset.value = "fast"
    form.iterations.value = 3
    form.update_every.value = 3
    form.channels.value = 8


def _made(viewer, content):
    return [layer for layer in viewer.layers if layer.metadata.get("napari_dip", {}).get("content") == content]


def test_uncertainty_and_residual_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = photon_limited(32)
    viewer.add_image(image, name="cells")
    widget = DenoiseWidget(viewer)
    form = widget.form
    _tiny(form)
    form.noise.value = "poisson-gaussian"
    assert not form.uncertainty_layer.enabled  # one run: no spread to show
    form.runs.value = 2
    assert form.uncertainty_layer.enabled
    form.uncertainty_layer.value = True
    form.residual_layer.value = True
    run_widget(qtbot, widget)
    (output,) = [layer for layer in viewer.layers if layer.name.startswith("cells [DIP denoise fast")]
    (spread,) = _made(viewer, "uncertainty")
    (residual,) = _made(viewer, "residual")
    assert spread.name.startswith("cells [DIP denoise uncertainty") and residual.name.startswith("cells [DIP denoise residual")
    assert spread.data.shape == residual.data.shape == image.shape
    assert spread.data.dtype == np.float32 and spread.data.max() > 0
    record = residual.metadata["napari_dip"]
    assert record["input_layer"] == "cells" and record["result_layer"] == output.name
    assert record["parameters"]["runs"] == 2 and record["engine_settings"]["noise"]["model"] == "poisson-gaussian"
    expected = noise_residual(image, output.data, output.metadata["napari_dip"]["engine_settings"]["noise"])
    assert np.allclose(residual.data, expected, atol=1e-5)
    # Run again with "replace previous output": the trust layers are replaced, not added.
    run_widget(qtbot, widget)
    assert len(_made(viewer, "uncertainty")) == 1 and len(_made(viewer, "residual")) == 1
    assert len(viewer.layers) == 4


def test_residual_layer_of_a_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([photon_limited(32, seed=z) for z in range(2)])
    viewer.add_image(stack, name="series")
    widget = DenoiseWidget(viewer)
    form = widget.form
    _tiny(form)
    form.planes.value = "all planes"
    form.residual_layer.value = True
    run_widget(qtbot, widget)
    (residual,) = _made(viewer, "residual")
    (output,) = [layer for layer in viewer.layers if layer.name.startswith("series [DIP denoise fast")]
    assert residual.data.shape == stack.shape
    noise = output.metadata["napari_dip"]["engine_settings"]["noise"]
    assert np.allclose(residual.data, noise_residual(stack, output.data, noise), atol=1e-5)


def test_super_resolution_offers_no_residual(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = SuperResolveWidget(viewer)
    assert not widget.form.residual_layer.visible
    assert widget.form.choices().residual_layer is False
