"""3D (volumetric) DIP: the 3D network, its anisotropic schedule, the API, the command line."""

import numpy as np
import pytest
import tifffile
import torch

from napari_dip import denoise, inpaint, super_resolve
from napari_dip.engine.fit import FitConfig, Fitter
from napari_dip.engine.forward import Identity, KnownPixels
from napari_dip.engine.networks import SkipNetConfig
from napari_dip.engine.networks3d import VolumeNetConfig, VolumeSkipNet, downsampling_schedule
from napari_dip.engine.stopping import StoppingConfig
from napari_dip.errors import InputError
from napari_dip.volumes import iter_restore_volumes

#: Three scales of 4 channels: a 3D step on a small volume takes milliseconds.
TINY_3D = SkipNetConfig(input_channels=4, channels_down=(4, 4, 4), channels_up=(4, 4, 4), channels_skip=(2, 2, 2))
TINY = {"network": TINY_3D, "device": "cpu"}


def smooth_volume(shape=(5, 24, 24), seed=0):
    """A smooth float32 volume in [0, 1] that varies along Z as well as in the plane."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    a, b, c = rng.uniform(1, 3, 3)
    return (0.5 + 0.4 * np.sin(a * np.pi * x) * np.cos(b * np.pi * y) * np.cos(c * z)).astype(np.float32)


# -- the network -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 13, 17), (7, 31, 29), (1, 9, 11)])
@pytest.mark.parametrize("spacing", [None, (3.0, 1.0, 1.0)])
def test_the_3d_network_restores_volumes_of_odd_sizes_to_their_shape(shape, spacing):
    cfg = VolumeNetConfig.for_volume(TINY_3D, shape, spacing)
    padded = cfg.padded_shape(shape)
    assert all(p >= n for p, n in zip(padded, shape))
    net = VolumeSkipNet(cfg, out_channels=2)
    out = net(torch.rand(1, TINY_3D.input_channels, *padded))
    assert out.shape == (1, 2, *padded)
    fitter = Fitter(np.random.default_rng(0).random((2, *shape), np.float32), Identity(), cfg,
                    FitConfig(iterations=3, device="cpu"))
    final = list(fitter.run(snapshot_every=3))[-1]
    assert final.average.shape == (2, *shape) and final.output.shape == (2, *shape)
    assert np.isfinite(final.average).all()


def test_anisotropic_voxels_are_halved_in_the_plane_until_roughly_isotropic():
    # Z three times coarser: two in-plane halvings make XY 4x (Z/XY = 0.75), then all three.
    assert downsampling_schedule(5, (3.0, 1.0, 1.0)) == ((1, 2, 2), (1, 2, 2)) + ((2, 2, 2),) * 3
    # 1.5x is the threshold: one in-plane halving.
    assert downsampling_schedule(3, (1.5, 1.0, 1.0)) == ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    assert downsampling_schedule(3, (1.4, 1.0, 1.0)) == ((2, 2, 2),) * 3
    # Z finer than XY: Z alone first.
    assert downsampling_schedule(3, (0.25, 1.0, 1.0)) == ((2, 1, 1), (2, 1, 1), (2, 2, 2))
    # Unknown spacing: cubic voxels.
    assert downsampling_schedule(2, None) == ((2, 2, 2), (2, 2, 2))


def test_a_thin_stack_is_not_halved_below_what_a_convolution_can_pad():
    strides = downsampling_schedule(5, (1.0, 1.0, 1.0), (5, 64, 64))
    assert [s[0] for s in strides] == [2, 1, 1, 1, 1]  # 5 -> 3 planes, then Z stays
    assert all(s[1:] == (2, 2) for s in strides)  # the plane goes on being halved
    cfg = VolumeNetConfig.for_volume(TINY_3D.with_width(4), (5, 64, 64))
    assert cfg.padded_shape((5, 64, 64))[0] == 6  # not 32


def test_spacing_is_checked():
    with pytest.raises(InputError, match="spacing"):
        downsampling_schedule(3, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        downsampling_schedule(3, (1.0, 1.0))


def test_stopping_rules_work_on_volumes():
    volume = smooth_volume((5, 16, 16))[None]
    cfg = VolumeNetConfig.for_volume(TINY_3D, volume.shape[1:])
    for rule in ("validation", "wmv"):
        stopping = StoppingConfig(rule=rule, warmup=2, patience=3, window=3)
        fitter = Fitter(volume, Identity(), cfg, FitConfig(iterations=60, device="cpu", check_every=5, stopping=stopping))
        if rule == "validation":
            # Held-out voxels are drawn over Z as well: not the same pixels in every plane.
            held = fitter.stopper.held[0, 0].numpy()
            assert not all(np.array_equal(held[0], held[z]) for z in range(1, held.shape[0]))
        final = list(fitter.run(snapshot_every=100))[-1]
        # The rule scored the volume: it names a best iteration, whose volume is the result.
        assert final.stop_reason in (rule, "budget") and final.best_iteration is not None
        assert 2 <= final.best_iteration <= final.iteration
        assert final.average.shape == volume.shape
        np.testing.assert_array_equal(final.average, fitter.stopper.best_average[0].numpy())


def test_inpainting_a_volume_sees_only_the_known_voxels():
    volume = smooth_volume((4, 16, 16))[None]
    known = np.ones_like(volume)
    known[:, 1:3, 5:9, 5:9] = 0
    corrupted = volume.copy()
    corrupted[known == 0] = 1.0
    cfg = VolumeNetConfig.for_volume(TINY_3D, volume.shape[1:])
    a = Fitter(corrupted, KnownPixels(known), cfg, FitConfig(iterations=5, device="cpu"))
    b = Fitter(np.where(known == 0, 0.0, corrupted), KnownPixels(known), cfg, FitConfig(iterations=5, device="cpu"))
    ra, rb = list(a.run(5))[-1], list(b.run(5))[-1]
    np.testing.assert_array_equal(ra.average, rb.average)  # the holes' values do not matter


def test_several_runs_and_2d_models_are_refused_for_volumes():
    volume = smooth_volume((4, 16, 16))[None]
    cfg = VolumeNetConfig.for_volume(TINY_3D, volume.shape[1:])
    with pytest.raises(InputError, match="runs"):
        Fitter(volume, Identity(), cfg, FitConfig(iterations=2, runs=2, device="cpu"))
    with pytest.raises(InputError, match="volume"):
        Fitter(volume, Identity(), TINY_3D, FitConfig(iterations=2, device="cpu"))


# -- the API ---------------------------------------------------------------------------


def _noisy_stack(shape=(5, 24, 24), seed=1):
    rng = np.random.default_rng(seed)
    clean = smooth_volume(shape)
    return np.clip((clean + rng.normal(0, 0.05, shape)) * 4000 + 100, 0, 65535).astype(np.uint16)


def test_volumetric_denoise_returns_the_stack_and_records_how():
    stack = _noisy_stack()
    result = denoise(stack, axes="ZYX", volumetric=True, spacing=(3.0, 1.0, 1.0), iterations=4, **TINY)
    assert result.shape == stack.shape and result.dtype == stack.dtype
    assert not np.array_equal(result, stack)
    stream = iter_restore_volumes("denoise", stack, axes="ZYX", spacing=(3.0, 1.0, 1.0), iterations=4,
                                  snapshot_every=None, **TINY)
    # How the fit runs is settled before it starts, as for planes.
    assert stream.settings["preset"] == "fast"
    snaps = list(stream)
    assert len(snaps) == 1
    index, final = snaps[0]
    assert stream.recorrupts is bool(final.settings["fit"]["recorrupt_sigma"])
    assert index == () and final.done and final.average.shape == stack.shape
    settings = final.settings
    assert settings["volumetric"]["spacing"] == [3.0, 1.0, 1.0]
    assert settings["volumetric"]["strides"][0] == [1, 2, 2]
    assert settings["network"]["volumetric"] is True and settings["network"]["spacing"] == [3.0, 1.0, 1.0]
    np.testing.assert_array_equal(final.average, result)  # the same seed gives the same volume


def test_volumetric_stacks_with_time_and_channels_come_back_in_their_layout():
    stack = np.stack([np.stack([_noisy_stack((3, 16, 16), seed=s) for s in (1, 2)], axis=1) for _ in range(2)])
    assert stack.shape == (2, 3, 2, 16, 16)  # TZCYX
    stream = list(iter_restore_volumes("denoise", stack, axes="TZCYX", iterations=3, snapshot_every=None, **TINY))
    assert [index for index, _ in stream] == [(0,), (1,)]
    assert stream[0][1].average.shape == (3, 2, 16, 16)  # ZCYX
    assert stream[0][1].settings["volumetric"]["spacing_assumed_isotropic"] is True
    result = denoise(stack, axes="TZCYX", volumetric=True, iterations=3, **TINY)
    assert result.shape == stack.shape and result.dtype == stack.dtype
    np.testing.assert_array_equal(result[1], stream[1][1].average)


def test_volumetric_inpainting_keeps_the_known_voxels():
    stack = _noisy_stack((4, 16, 16))
    holes = np.zeros(stack.shape, bool)
    holes[1:3, 4:8, 4:8] = True
    result = inpaint(stack, holes, axes="ZYX", volumetric=True, iterations=4, **TINY)
    assert result.shape == stack.shape and result.dtype == stack.dtype
    np.testing.assert_array_equal(result[~holes], stack[~holes])
    assert not np.array_equal(result[holes], stack[holes])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: denoise(_noisy_stack()[0], axes="YX", volumetric=True, **TINY), "Z axis"),
        (lambda: denoise(_noisy_stack(), axes="TYX", volumetric=True, **TINY), "Z axis"),
        (lambda: denoise(_noisy_stack(), volumetric=True, **TINY), "axes"),
        (lambda: super_resolve(_noisy_stack(), 2, axes="ZYX", volumetric=True, **TINY), "plane by plane"),
        (lambda: denoise(_noisy_stack(), axes="ZYX", spacing=(2, 1, 1), **TINY), "volumetric=True"),
        (lambda: denoise(_noisy_stack(), axes="ZYX", volumetric=True, spacing=(2, -1, 1), **TINY), "spacing"),
    ],
)
def test_volumetric_refusals_are_clear(call, message):
    with pytest.raises(InputError, match=message):
        call()


# -- the command line --------------------------------------------------------------------


def test_the_command_line_restores_an_imagej_z_stack_in_3d_keeping_its_calibration(tmp_path, capsys):
    from napari_dip.cli import main
    from napari_dip.io import read_image, read_provenance

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, _noisy_stack((5, 24, 24)), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.6})
    out = tmp_path / "out.tif"
    args = ["--preset", "fast", "--channels", "4", "--iterations", "3", "--device", "cpu", "-q"]
    assert main(["denoise", str(source), "-o", str(out), "--3d", *args]) == 0
    plan = capsys.readouterr().out.splitlines()[0]
    assert "1 volume fitted in 3D (spacing z 0.6, y 0.2, x 0.2)" in plan and "needs about" in plan
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX" and tif.series[0].shape == (5, 24, 24)
        assert tif.series[0].dtype == np.uint16
        meta = tif.imagej_metadata
        assert (meta["unit"], meta["spacing"]) == ("um", 0.6)
    assert read_image(out).calibration.x == pytest.approx(0.2)  # the pixel size too
    provenance = read_provenance(out)
    assert provenance["volumetric"]["spacing"] == pytest.approx([0.6, 0.2, 0.2])
    assert provenance["volumetric"]["strides"][0] == [1, 2, 2]  # Z is three times coarser
    assert provenance["iterations_run"] == 3 and provenance["volume_results"][0]["stop_reason"] == "budget"


def test_the_command_line_refuses_3d_without_a_z_axis(tmp_path, capsys):
    import imageio.v3 as iio

    from napari_dip.cli import main

    source = tmp_path / "flat.png"
    iio.imwrite(source, (smooth_volume((1, 24, 24))[0] * 255).astype(np.uint8))
    out = tmp_path / "out.png"
    assert main(["denoise", str(source), "-o", str(out), "--3d", "--device", "cpu", "-q"]) == 2
    assert "Z axis" in capsys.readouterr().err
    assert not out.exists()


# -- the widget ------------------------------------------------------------------------


@pytest.mark.gui
def test_the_denoise_widget_restores_a_z_stack_in_3d_with_the_layer_scale(make_napari_viewer, qtbot):
    pytest.importorskip("napari")
    from napari_dip.widgets.dock import DenoiseWidget
    from napari_dip.widgets.plan import PLANES_ALL

    viewer = make_napari_viewer()
    stack = smooth_volume((4, 32, 32)) + np.random.default_rng(0).normal(0, 0.05, (4, 32, 32)).astype(np.float32)
    viewer.add_image(stack, name="zstack", scale=(3.0, 1.0, 1.0))
    widget = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(widget, name="denoise")
    form = widget.form
    form.device.value, form.preset.value = "cpu", "fast"
    form.iterations.value, form.update_every.value, form.channels.value = 4, 2, 4
    assert not form.volumetric.enabled  # only for all planes of a stack
    form.planes.value = PLANES_ALL
    assert form.volumetric.enabled and not form.volumetric.value
    form.volumetric.value = True
    assert not form.warm_start.enabled  # one fit: nothing to warm-start
    widget.start()
    assert widget.run_state is not None, widget.status
    assert "3D fit of 4x32x32 voxels (spacing z 3, y 1, x 1)" in widget.status
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=60_000)
    (output,) = [layer for layer in viewer.layers if "napari_dip" in layer.metadata]
    assert output.data.shape == stack.shape and output.data.dtype == stack.dtype
    assert all(output.data[z].std() > 0 for z in range(4))
    np.testing.assert_allclose(output.scale, (3.0, 1.0, 1.0))
    meta = output.metadata["napari_dip"]
    assert meta["parameters"]["volumetric"] is True and meta["parameters"]["spacing"] == [3.0, 1.0, 1.0]
    assert meta["engine_settings"]["volumetric"]["strides"][0] == [1, 2, 2]
    assert meta["iterations_run"] == 4 and meta["stop_reason"] == "budget"


def test_a_weighted_noise_fit_in_3d_is_refused_before_anything_runs():
    rng = np.random.default_rng(0)
    stack = (rng.poisson(np.full((4, 16, 16), 40.0)) * 10 + 100).astype(np.uint16)
    with pytest.raises(InputError, match="3D restoration fits the squared error"):
        iter_restore_volumes("denoise", stack, axes="ZYX", noise="poisson-gaussian", noise_fit="weighted",
                             iterations=2, **TINY)

