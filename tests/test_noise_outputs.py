"""Trust outputs and the noise-model choice (issue 11): the residual from the numpy API
(one definition with the command line's --residual), the stack's noise model estimated
across its planes, and noise='auto' on sparse bright images and on Gaussian-noise images."""

import numpy as np
import pytest
import tifffile

from napari_dip import denoise, inpaint, iter_restore, iter_restore_planes
from napari_dip.cli import main
from napari_dip.errors import InputError
from napari_dip.io import read_image, read_provenance
from napari_dip.noise import choose_noise_model, estimate_noise_levels
from napari_dip.residual import noise_residual
from tiny import TINY, smooth_image

FIT = {"iterations": 4, "snapshot_every": None, **TINY}


def _photon_limited(signal, a, b, seed):
    rng = np.random.default_rng(seed)
    return a * rng.poisson(signal / a) + rng.normal(0, np.sqrt(b), signal.shape)


def _uint16_cells(size=32, seed=0, gain=2.0):
    signal = 20 + 800 * smooth_image(size, seed=seed)
    return np.round(100 + _photon_limited(signal, gain, 9.0, seed)).astype(np.uint16)


# -- the residual ----------------------------------------------------------------------


def test_residual_from_the_api_is_the_shared_definition():
    raw = _uint16_cells()
    restored, residual = denoise(raw, noise="poisson-gaussian", offset=100, return_residual=True, **FIT)
    assert residual.shape == raw.shape and residual.dtype == np.float32
    # The same fit through the streaming API gives the record the residual is made with.
    final = list(iter_restore("denoise", raw, noise="poisson-gaussian", offset=100, **FIT))[-1]
    assert np.array_equal(final.average, restored)
    record = final.settings["noise"]
    assert record["model"] == "poisson-gaussian"
    assert np.allclose(residual, noise_residual(raw, restored, record), atol=1e-6)
    # Standardised: the difference divided by the model's standard deviation there.
    a, b = record["a"][0], record["b"][0]
    difference = raw.astype(np.float64) - restored
    assert np.allclose(residual, difference / np.sqrt(a * (restored - 100.0) + b), rtol=1e-4, atol=1e-5)
    assert not np.allclose(residual, difference)


def test_residual_under_the_gaussian_model_is_in_the_image_units():
    image = (smooth_image(32, channels=3) * 255).astype(np.uint8)
    restored, residual = denoise(image, noise="gaussian", return_residual=True, **FIT)
    assert residual.shape == image.shape
    assert np.array_equal(residual, image.astype(np.float32) - restored.astype(np.float32))


def test_stack_with_channels_returns_result_uncertainty_and_residual_per_channel():
    # Two planes of two channels with different gains: each channel standardised by its own model.
    planes = [np.stack([_uint16_cells(32, seed=z, gain=2.0), _uint16_cells(32, seed=z + 5, gain=6.0)])
              for z in range(2)]
    stack = np.stack(planes)  # ZCYX
    out = denoise(stack, axes="ZCYX", noise="poisson-gaussian", offset=100, runs=2, return_uncertainty=True,
                  return_residual=True, **FIT)
    restored, spread, residual = out
    assert restored.shape == spread.shape == residual.shape == stack.shape
    assert residual.dtype == np.float32 and spread.max() > 0
    finals = [snap for _, snap in iter_restore_planes("denoise", stack, axes="ZCYX", noise="poisson-gaussian",
                                                      offset=100, runs=2, **FIT) if snap.done]
    record = finals[0].settings["noise"]
    assert len(record["a"]) == 2 and record["a"][1] > 1.5 * record["a"][0]
    expected = noise_residual(stack, restored, record, axes="ZCYX")
    assert np.allclose(residual, expected, atol=1e-6)
    for c in range(2):
        variance = record["a"][c] * (restored[:, c].astype(np.float64) - 100) + record["b"][c]
        difference = stack[:, c].astype(np.float64) - restored[:, c]
        assert np.allclose(residual[:, c], difference / np.sqrt(variance), rtol=1e-4, atol=1e-5)


def test_residual_is_for_denoising_only_and_volumetric_works():
    image = (smooth_image(32) * 255).astype(np.uint8)
    holes = np.zeros(image.shape, bool)
    holes[10:14, 10:14] = True
    with pytest.raises(InputError, match="residual"):
        inpaint(image, holes, return_residual=True, **FIT)
    stack = np.stack([_uint16_cells(32, seed=z) for z in range(4)])
    restored, residual = denoise(stack, axes="ZYX", volumetric=True, noise="gaussian", return_residual=True, **FIT)
    assert residual.shape == stack.shape
    assert np.allclose(residual, stack.astype(np.float32) - restored.astype(np.float32))


def test_cli_residual_file_of_a_stack_with_channels_is_the_api_definition(tmp_path):
    stack = np.stack([np.stack([_uint16_cells(32, seed=z), _uint16_cells(32, seed=z + 7, gain=5.0)])
                      for z in range(2)])
    source, out, residual = tmp_path / "cells.tif", tmp_path / "out.tif", tmp_path / "residual.tif"
    tifffile.imwrite(source, stack)
    args = ["denoise", str(source), "-o", str(out), "--axes", "ZCYX", "--noise", "poisson-gaussian",
            "--offset", "100", "--residual", str(residual), "--preset", "fast", "--channels", "8",
            "--iterations", "3", "--device", "cpu", "-q"]
    assert main(args) == 0
    written = read_image(residual).data
    provenance = read_provenance(out)
    assert written.shape == stack.shape and written.dtype == np.float32
    expected = noise_residual(stack, read_image(out).data, provenance["noise"], axes="ZCYX")
    assert np.allclose(written, expected, atol=1e-5)


# -- the noise model of a stack ------------------------------------------------------------


def test_stack_noise_model_comes_from_the_whole_stack_not_its_dark_first_plane():
    a, b, size = 2.0, 25.0, 128
    y, x = np.mgrid[0:size, 0:size] / size
    dark = np.full((size, size), 30.0)  # a flat, dim first plane: one intensity, no slope to see
    bright = [30 + 900 * x * (0.6 + 0.4 * np.cos(2 * np.pi * (y + z / 3))) for z in range(3)]
    clean = np.stack([dark, *bright])
    stack = np.stack([_photon_limited(plane, a, b, seed) for seed, plane in enumerate(clean)]).astype(np.float32)
    # On the first plane alone the estimate cannot tell the noise grows with the signal.
    assert choose_noise_model(estimate_noise_levels(stack[0])) == "gaussian"
    _, first = next(iter_restore_planes("denoise", stack, axes="ZYX", iterations=1, snapshot_every=None, **TINY))
    record = first.settings["noise"]
    assert record["model"] == "poisson-gaussian" and record["requested"] == "auto"
    assert record["a"][0] == pytest.approx(a, rel=0.10)
    assert record["b"][0] == pytest.approx(b, rel=0.35)
    assert record["estimated_on"]["planes"] == [[0], [1], [2], [3]]
    assert record["estimated_on"]["axes"] == "Z"


# -- noise="auto" ----------------------------------------------------------------------


def _sparse_cells(size, seed):
    """Bright blurred cells on a dark background (about 2 % of the pixels), 100 to 3000
    counts, Poisson noise (a = 1) plus Gaussian read noise of 20 counts (b = 400)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    scene = np.zeros((size, size))
    count = size * size // 3000
    ys, xs = rng.integers(0, size, (2, count))
    scene[ys, xs] = rng.uniform(0.5, 1.0, count)
    scene = ndimage.gaussian_filter(scene, 3.0)
    scene /= scene.max()
    clean = 100 + 2900 * scene
    return clean, _photon_limited(clean, 1.0, 400.0, seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_picks_poisson_gaussian_on_sparse_bright_images(seed):
    clean, noisy = _sparse_cells(1024, seed)
    # Sparse: at the 95th percentile, where the old rule looked for the bright end, the
    # variance a * signal + b is not 1.5 times the background's yet.
    assert 1.0 * np.quantile(clean, 0.95) + 400 < 1.5 * (1.0 * 100 + 400)
    levels = estimate_noise_levels(noisy)
    # The small blurred cells' curvature adds to the fine detail: a comes out high here.
    assert 0.8 < levels.a < 1.6
    assert levels.b == pytest.approx(400.0, rel=0.2)
    assert choose_noise_model(levels) == "poisson-gaussian"


def _gaussian_noise_cases(name, sigmas):
    from skimage import color, data

    image = getattr(data, name)()
    image = (color.rgb2gray(image) * 255 if image.ndim == 3 else image).astype(np.float64)
    rng = np.random.default_rng(0)
    for sigma in sigmas:
        noisy = image + rng.normal(0, sigma, image.shape)
        yield sigma, noisy
        yield sigma, np.clip(np.round(noisy), 0, 255)  # as an 8-bit file holds it


@pytest.mark.parametrize("name", ["camera", "coffee", "brick", "moon", "astronaut", "gravel"])
def test_auto_picks_gaussian_on_gaussian_noise_at_sigma_10_25_50(name):
    for sigma, values in _gaussian_noise_cases(name, (10, 25, 50)):
        levels = estimate_noise_levels(values)
        assert choose_noise_model(levels) == "gaussian", (name, sigma, levels)


def test_auto_picks_gaussian_on_textured_coins_at_sigma_25_and_50():
    for sigma, values in _gaussian_noise_cases("coins", (25, 50)):
        assert choose_noise_model(estimate_noise_levels(values)) == "gaussian", sigma


@pytest.mark.xfail(reason="known limit: the coins' fine texture at sigma 10 still looks like noise growing with "
                   "the signal to the auto rule", strict=False)
def test_auto_on_textured_coins_at_sigma_10():
    for sigma, values in _gaussian_noise_cases("coins", (10,)):
        assert choose_noise_model(estimate_noise_levels(values)) == "gaussian"


def test_noise_record_is_in_the_image_units_whatever_the_engine_scale():
    # The engine's 0 is the value range's low end, here far below the data (head-room):
    # the record's b must still be the read-out variance of var(v) = a * (v - offset) + b.
    from napari_dip.noise_model import plan_noise

    rng = np.random.default_rng(8)
    signal = np.tile(np.linspace(50, 900, 256), (256, 1))
    raw = 300 + 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 5.0, signal.shape)
    direct = estimate_noise_levels(raw, offset=300)  # on the image's own values
    assert direct.a == pytest.approx(2.0, rel=0.10)
    for low, high in ((raw.min(), raw.max()), (raw.min() - 400, raw.max() + 400)):
        chw = ((raw - low) / (high - low))[None]
        record = plan_noise(chw, [low], [high], noise="poisson-gaussian", offset=300).describe()
        assert record["a"][0] == pytest.approx(direct.a, rel=1e-3)
        assert record["b"][0] == pytest.approx(direct.b, rel=1e-3)
