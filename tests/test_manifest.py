"""The npe2 manifest: valid, importable, and its contributions work inside napari."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

import napari_dip  # noqa: E402

MANIFEST = Path(napari_dip.__file__).with_name("napari.yaml")


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_file(MANIFEST)


def test_manifest_validates_with_the_npe2_command():
    npe2_cli = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2_cli), "validate", str(MANIFEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_installed_entry_point_finds_the_manifest(manifest):
    installed = npe2.PluginManifest.from_distribution("napari-dip")
    assert installed.name == manifest.name == "napari-dip"


def test_every_command_imports(manifest):
    manifest.validate_imports()
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Denoise", "Super-resolve", "Inpaint", "Batch"}


def test_widget_module_does_not_import_torch():
    code = (
        "import sys, napari_dip._widget, napari_dip.widgets.dock, napari_dip._sample_data; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_menu_items_sit_in_a_deep_image_prior_submenu_for_image_layers(manifest):
    from app_model.expressions import parse_expression

    menus = manifest.contributions.menus
    (entry,) = menus["napari/layers/filter"]
    (submenu,) = [s for s in manifest.contributions.submenus if s.id == entry.submenu]
    assert submenu.label == "Deep Image Prior"
    items = menus[entry.submenu]
    # Commands that show the widget (napari's own widget entries toggle it, see below).
    assert {item.command for item in items} == {
        "napari-dip.show_denoise",
        "napari-dip.show_super_resolve",
        "napari-dip.show_inpaint",
    }
    for clause in [entry.when, *(item.when for item in items)]:
        expression = parse_expression(clause)
        assert expression.eval({"active_layer_type": "image"})
        assert not expression.eval({"active_layer_type": "labels"})


def test_settings_declare_a_remembered_device(manifest):
    properties = manifest.contributions.configurations["defaults"].properties
    assert properties["device"].default == "auto"
    assert properties["preset"].default == "auto"
    assert set(properties["preset"].enum) == {"auto", "fast", "paper"}


def test_denoise_sample_is_a_noisy_and_clean_pair():
    from napari_dip._sample_data import denoise_sample

    (clean, clean_meta, clean_type), (noisy, noisy_meta, noisy_type) = denoise_sample()
    assert clean_type == noisy_type == "image"
    assert clean.shape == noisy.shape and clean.dtype == np.float32
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    assert 0.05 < float(np.std(noisy - clean)) < 0.15  # sigma 25/255 ~ 0.098, clipped
    assert "noisy" in noisy_meta["name"]


def test_inpaint_sample_has_a_labels_mask_of_the_holes():
    from napari_dip._sample_data import inpaint_sample

    layers = inpaint_sample()
    by_type = {kind: (data, meta) for data, meta, kind in layers}
    (mask, _meta) = by_type["labels"]
    damaged = layers[1][0]
    assert mask.shape == damaged.shape and mask.dtype == np.uint8
    assert 0.02 < mask.mean() < 0.5
    assert np.all(damaged[mask > 0] == 0)


@pytest.mark.gui
def test_plugin_widgets_dock_and_samples_open_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dip", "noisy_camera")
    assert [layer.name for layer in viewer.layers] == ["camera (clean)", "camera (noisy)"]
    for name in ("Denoise", "Super-resolve", "Inpaint"):
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-dip", name)
        assert widget.form.image.value.name == "camera (noisy)"
    viewer.open_sample("napari-dip", "inpainting")
    assert "holes" in viewer.layers


@pytest.mark.gui
def test_filter_menu_offers_the_widgets_only_for_image_layers(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    app = get_app_model()
    submenus = [
        item for item in app.menus.get_menu("napari/layers/filter") if getattr(item, "submenu", None) == "napari-dip.deep_image_prior"
    ]
    assert len(submenus) == 1
    when = submenus[0].when
    assert when.eval({"active_layer_type": "image"}) and not when.eval({"active_layer_type": "points"})
    titles = [item.command.id for item in app.menus.get_menu("napari-dip.deep_image_prior")]
    assert set(titles) == {"napari-dip.show_denoise", "napari-dip.show_super_resolve", "napari-dip.show_inpaint"}
    assert viewer is not None


@pytest.mark.gui
def test_filter_menu_entries_show_an_open_widget_instead_of_hiding_it(make_napari_viewer, qtbot):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((32, 32), np.float32), name="image")
    app = get_app_model()
    for _ in range(2):  # the second time the widget is already open
        app.commands.execute_command("napari-dip.show_denoise").result()
        widget = viewer.window.dock_widgets["Denoise (Deep Image Prior)"]
        dock = widget.parent()
        assert dock.isVisible()
    dock.hide()
    app.commands.execute_command("napari-dip.show_denoise").result()
    assert dock.isVisible()
    assert list(viewer.window.dock_widgets) == ["Denoise (Deep Image Prior)"]
    # napari's own Plugins-menu entry is a toggle: on an open widget it hides it (napari's
    # behaviour, documented in the README).
    app.commands.execute_command("napari-dip.denoise_widget").result()
    assert not dock.isVisible()


@pytest.mark.gui
def test_device_choice_is_remembered_in_plugin_settings(plugin_settings, npe2pm, make_napari_viewer):
    from napari.settings import get_plugin_settings

    from napari_dip.widgets.dock import DenoiseWidget

    npe2pm.register(npe2.PluginManifest.from_file(MANIFEST))
    viewer = make_napari_viewer()
    first = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(first)
    assert first.form.device.value == "auto" and first.form.preset.value == "auto"
    first.form.device.value = "cpu"
    first.form.preset.value = "paper"
    assert get_plugin_settings("napari-dip").defaults.device == "cpu"
    assert get_plugin_settings("napari-dip").defaults.preset == "paper"
    second = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(second)
    assert second.form.device.value == "cpu"
    assert second.form.preset.value == "paper"
    assert "not available" not in second.form.device_info.value


@pytest.mark.gui
def test_a_remembered_device_missing_here_falls_back_to_auto_and_says_so(plugin_settings, npe2pm, make_napari_viewer):
    from napari.settings import get_plugin_settings

    from napari_dip.engine.devices import available_devices, describe_device
    from napari_dip.widgets.dock import DenoiseWidget

    if "cuda:0" in available_devices():
        pytest.skip("this machine has the CUDA device the test pretends is missing")
    npe2pm.register(npe2.PluginManifest.from_file(MANIFEST))
    get_plugin_settings("napari-dip").defaults.device = "cuda"
    viewer = make_napari_viewer()
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.form.device.value == "auto"
    assert "'cuda' is not available here; using auto" in widget.form.device_info.value
    assert widget.form.device_info.value.endswith(f"Runs on {describe_device('auto')}")
    # The remembered choice stays until the user picks another device.
    assert get_plugin_settings("napari-dip").defaults.device == "cuda"


@pytest.mark.gui
@pytest.mark.parametrize("task", ["denoise", "super-resolve", "inpaint"])
def test_open_with_sample_is_ready_to_run(make_napari_viewer, task):
    from napari_dip._widget import open_with_sample

    viewer = make_napari_viewer()
    same, widget = open_with_sample(viewer, task)
    assert same is viewer
    assert widget.task == task
    assert widget.form.image.value is not None
    if task == "inpaint":
        assert widget.form.image.value.name == "camera (holes)"
        assert widget.form.mask.value.name == "holes"


def test_the_api_is_listed_before_its_first_use_without_importing_torch():
    code = "import sys, napari_dip; print(set(napari_dip.__all__) <= set(dir(napari_dip)), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]
