"""Noise models: the noise-level estimate, the Anscombe transform and its exact unbiased
inverse, the Poisson-Gaussian loss, their use in the numpy API, and the uncertainty map."""

import numpy as np
import pytest
import torch

from napari_dip import denoise, iter_restore
from napari_dip.engine.losses import PoissonGaussianError, SquaredError
from napari_dip.errors import InputError
from napari_dip.noise import (
    choose_noise_model,
    estimate_noise_levels,
    gat,
    gat_inverse,
    gat_inverse_algebraic,
)
from napari_dip.noise_model import plan_noise
from napari_dip.residual import noise_residual
from tiny import TINY, smooth_image


def _ramp(size=512):
    """A smooth signal over most of [0, 1]: a ramp along x, modulated along y."""
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.05 + 0.9 * x * (0.75 + 0.25 * np.cos(2 * np.pi * y))


def _poisson_gaussian(signal, a, b, seed):
    rng = np.random.default_rng(seed)
    return a * rng.poisson(signal / a) + rng.normal(0, np.sqrt(b), signal.shape)


@pytest.mark.parametrize(
    ("a", "b", "seed"), [(0.01, 1e-3, 0), (0.002, 4e-4, 1), (0.004, 1e-4, 2), (0.02, 2e-3, 3)]
)
def test_estimate_recovers_known_a_and_b_within_10_percent(a, b, seed):
    levels = estimate_noise_levels(_poisson_gaussian(_ramp(), a, b, seed))
    assert levels.a == pytest.approx(a, rel=0.10)
    assert levels.b == pytest.approx(b, rel=0.10)
    assert choose_noise_model(levels) == "poisson-gaussian"


def test_estimate_in_detector_units_with_offset_and_gain():
    # A 16-bit camera: baseline 100, gain 2.5 ADU per electron, read noise 12 ADU.
    rng = np.random.default_rng(5)
    electrons = 5 + 200 * _ramp()
    raw = 100 + 2.5 * rng.poisson(electrons) + rng.normal(0, 12.0, electrons.shape)
    raw = np.round(raw).astype(np.uint16)
    free = estimate_noise_levels(raw, offset=100)
    assert free.a == pytest.approx(2.5, rel=0.10)
    assert free.b == pytest.approx(144.0, rel=0.10)
    given = estimate_noise_levels(raw, gain=2.5, offset=100)
    assert given.a == 2.5 and given.b == pytest.approx(144.0, rel=0.10)


def test_gaussian_images_are_not_taken_for_poisson():
    rng = np.random.default_rng(0)
    for seed in range(3):
        noisy = _ramp() + np.random.default_rng(seed).normal(0, 0.05, (512, 512))
        levels = estimate_noise_levels(noisy)
        assert choose_noise_model(levels) == "gaussian"
        assert np.sqrt(levels.b) == pytest.approx(0.05, rel=0.05)
    # 8-bit clipping at 0 and 255 must not look like signal-dependent noise.
    from skimage import data

    camera = data.camera().astype(float)
    clipped = np.clip(np.round(camera + rng.normal(0, 25, camera.shape)), 0, 255)
    assert choose_noise_model(estimate_noise_levels(clipped)) == "gaussian"


def test_gat_exact_inverse_is_unbiased_where_the_algebraic_one_is_not():
    rng = np.random.default_rng(0)
    a, b = 1.0, 0.25
    for signal in (1.0, 3.0, 10.0, 50.0):
        z = a * rng.poisson(signal / a, 200_000) + rng.normal(0, np.sqrt(b), 200_000)
        d = gat(z, a, b)
        assert d.std() == pytest.approx(1.0, abs=0.12)  # stabilised
        exact = float(gat_inverse(d.mean(), a, b))
        algebraic = float(gat_inverse_algebraic(d.mean(), a, b))
        assert exact == pytest.approx(signal, abs=0.05 * signal + 0.03)
        if signal <= 3:
            assert abs(algebraic - signal) > 2 * abs(exact - signal)


def test_gat_round_trip_at_high_counts_and_scale():
    # Far from zero the bias vanishes: inverse(transform(x)) = x; in any units (a, b scale).
    x = np.linspace(0.3, 1.0, 50)
    for a, b in [(1e-3, 1e-5), (2.5, 16.0)]:
        values = x * 1000 * a
        assert np.allclose(gat_inverse(gat(values, a, b), a, b), values, rtol=2e-3)
    with pytest.raises(InputError):
        gat(x, 0.0, 1.0)


def test_poisson_gaussian_loss_gradient_matches_the_analytic_one():
    torch.manual_seed(0)
    observation = torch.rand(1, 2, 4, 5, dtype=torch.float64)
    predicted = (observation + 0.1 * torch.randn_like(observation)).requires_grad_(True)
    a, b = [0.02, 0.05], [1e-3, 4e-3]
    loss_fn = PoissonGaussianError(a, b, observation[0])
    loss = loss_fn(predicted, observation)
    loss.backward()
    at = torch.tensor(a, dtype=torch.float64).reshape(-1, 1, 1)
    bt = torch.tensor(b, dtype=torch.float64).reshape(-1, 1, 1)
    variance = (at * predicted.detach() + bt).clamp_min(loss_fn.min_variance)
    expected = 2 * loss_fn.scale * (predicted.detach() - observation) / variance / observation.numel()
    assert torch.allclose(predicted.grad, expected, rtol=1e-6, atol=1e-12)
    # The value: the squared error weighted by scale / variance.
    manual = (loss_fn.scale * (predicted.detach() - observation) ** 2 / variance).mean()
    assert float(loss.detach()) == pytest.approx(float(manual), rel=1e-6)
    # Equal variance everywhere: the weighted error is the plain squared error.
    flat = PoissonGaussianError(0.0, 0.01, observation[0])
    assert float(flat(predicted, observation)) == pytest.approx(float(SquaredError()(predicted, observation)))


def test_plan_noise_auto_and_records_detector_units():
    rng = np.random.default_rng(2)
    electrons = 5 + 200 * _ramp(256)
    raw = np.round(100 + 3.0 * rng.poisson(electrons) + rng.normal(0, 5.0, electrons.shape))
    low, high = raw.min(), raw.max()
    chw = ((raw - low) / (high - low))[None].astype(np.float32)
    plan = plan_noise(chw, [low], [high], noise="auto", offset=100)
    assert plan.kind == "poisson-gaussian" and plan.fit == "gat"
    record = plan.describe()
    assert record["a"][0] == pytest.approx(3.0, rel=0.10)
    # In detector units the record is what the estimate on the raw values gives. (Its b,
    # the read-out variance 25, is barely identifiable here, where the darkest pixels' shot
    # noise is 6 times it: the estimate gives about 6. This test used to compare the record
    # with 25, which a sign error in the record's conversion, 2 a (low - offset), met.)
    direct = estimate_noise_levels(raw, offset=100)
    assert record["a"][0] == pytest.approx(direct.a, rel=0.02)
    assert record["b"][0] == pytest.approx(direct.b, rel=0.1, abs=0.5)
    # The fitted values are the transform, within [0, 1]; the way back is the image scale.
    fitted = plan.fit_input(chw)
    assert fitted.min() >= 0 and fitted.max() <= 1
    assert np.allclose(plan.to_image(fitted)[0][chw[0] > 0.3], chw[0][chw[0] > 0.3], rtol=0.01, atol=1e-3)
    # Stabilised noise: the jitter follows the transform's unit noise scaled to [0, 1].
    assert 0 < plan.jitter_sigma(chw) < 0.2
    assert plan_noise(chw, [low], [high], noise="gaussian").kind == "gaussian"
    with pytest.raises(InputError, match="unknown noise model"):
        plan_noise(chw, [low], [high], noise="poisson")


def test_denoise_records_the_noise_model_and_keeps_units_and_dtype():
    rng = np.random.default_rng(3)
    signal = 20 + 600 * smooth_image(48)
    raw = np.round(200 + 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 3, signal.shape)).astype(np.uint16)
    for noise_fit in ("gat", "weighted"):
        snaps = list(iter_restore("denoise", raw, noise="poisson-gaussian", noise_fit=noise_fit, offset=200,
                                  iterations=6, snapshot_every=3, **TINY))
        final = snaps[-1]
        assert final.average.dtype == np.uint16 and final.average.shape == raw.shape
        noise = final.settings["noise"]
        assert noise["model"] == "poisson-gaussian" and noise["fit"] == noise_fit and noise["offset"] == 200
        assert final.settings["loss"]["name"] == ("poisson-gaussian" if noise_fit == "weighted" else "squared-error")
        # Back in the input's units: the result lies within the input's range.
        assert raw.min() <= final.average.min() and final.average.max() <= raw.max()
    auto = list(iter_restore("denoise", raw, iterations=2, snapshot_every=None, **TINY))[-1]
    assert auto.settings["noise"]["requested"] == "auto"
    with pytest.raises(InputError, match="for denoising"):
        list(iter_restore("inpaint", raw, mask=raw > raw.max() - 50, noise="poisson-gaussian", iterations=2, **TINY))


def test_gaussian_image_under_auto_is_fitted_as_before():
    rng = np.random.default_rng(4)
    noisy = np.clip(smooth_image(64) + rng.normal(0, 0.1, (64, 64)), 0, 1).astype(np.float32)
    auto = list(iter_restore("denoise", noisy, iterations=4, snapshot_every=None, **TINY))[-1]
    plain = list(iter_restore("denoise", noisy, noise="gaussian", iterations=4, snapshot_every=None, **TINY))[-1]
    assert auto.settings["noise"]["model"] == "gaussian"
    assert np.array_equal(auto.average, plain.average)


def test_uncertainty_has_the_result_shape_and_is_zero_for_identical_runs():
    image = (smooth_image(32, channels=3) * 255).astype(np.uint8)
    result, spread = denoise(image, runs=2, return_uncertainty=True, noise="gaussian", iterations=5, **TINY)
    assert result.shape == spread.shape == image.shape and spread.dtype == np.float32
    assert spread.max() > 0  # two seeds: two different fits
    # Identical runs (the same weights, input and jitter in both): no spread at all.
    from napari_dip.engine.fit import Fitter, FitConfig
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.networks import SkipNet

    chw = np.moveaxis(image, 2, 0).astype(np.float32) / 255
    fitter = Fitter(chw, Identity(), TINY["network"], FitConfig(iterations=5, runs=2, device="cpu", reg_noise_std=0))
    with torch.no_grad():
        # Make run 1 a copy of run 0: the grouped network's second half of every layer.
        single = SkipNet(TINY["network"], 3)
        torch.manual_seed(0)
        pair = SkipNet.side_by_side([single, single])
        fitter.network.load_state_dict(pair.state_dict())
        half = fitter.input.shape[1] // 2
        fitter.input[:, half:] = fitter.input[:, :half]
    final = list(fitter.run(5))[-1]
    assert final.run_averages.shape == (2, 3, 32, 32)
    from napari_dip.arrays import prepare_image
    from napari_dip.noise_model import spread_in_user_units

    _, layout, _ = prepare_image(image)
    zero = spread_in_user_units(final.run_averages, layout)
    assert zero.shape == image.shape and np.abs(zero).max() < 1e-5
    with pytest.raises(InputError, match="runs=2"):
        denoise(image, return_uncertainty=True, iterations=2, **TINY)


def test_residual_is_standardised_under_the_poisson_gaussian_model():
    rng = np.random.default_rng(6)
    signal = 50 + 500 * _ramp(128)
    raw = 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 3.0, signal.shape)
    record = {"model": "poisson-gaussian", "a": [2.0], "b": [9.0], "offset": 0.0}
    residual = noise_residual(raw, signal, record)
    assert residual.std() == pytest.approx(1.0, rel=0.03)
    plain = noise_residual(raw, signal, {"model": "gaussian"})
    assert np.allclose(plain, raw - signal, atol=1e-3)


def test_scaled_counts_give_the_counts_estimate_in_their_units():
    # 8-bit counts as the engine holds them (/ 255 in float32): float rounding must not
    # change which intensity bins equal block means fall in. On a dark FMD crop it did:
    # the darkest bin was lost and a came out 1.6x too large.
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:256, 0:256]
    signal = np.where((x // 32 + y // 32) % 3 == 0, 30.0, 1.0) + 10 * np.exp(-((x - 128) ** 2) / 2000.0)
    counts = np.clip(rng.poisson(signal / 4.0) * 4.0 + rng.normal(0, 1.0, signal.shape).round(), 0, 255)
    counts = counts.astype(np.uint8)
    on_counts = estimate_noise_levels(counts.astype(np.float64))
    scaled = estimate_noise_levels((counts / np.float32(255)).astype(np.float32))
    assert scaled.a * 255 == pytest.approx(on_counts.a, rel=1e-3)
    assert scaled.b * 255**2 == pytest.approx(on_counts.b, rel=1e-3, abs=1e-2)
    assert scaled.bins == on_counts.bins


def test_true_zero_counts_are_not_taken_for_clipping():
    # A dark photon-counting image: gain 4, about 1 photon of background, a few bright
    # cells. Nearly every dark block touches a zero count; zeros do not pile up (about as
    # many as single photons), so they stay in when leaving them out leaves too little.
    from napari_dip.noise import FEW_BINS, _pile_up

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    photons = 0.6 + 60 * np.exp(-(((x % 128) - 64) ** 2 + ((y % 128) - 64) ** 2) / (2 * 14.0**2))
    counts = np.clip(4.0 * rng.poisson(photons), 0, 255)
    assert (counts == 0).mean() > 0.3
    assert not _pile_up(counts, 0.0, low_end=True)
    levels = estimate_noise_levels(counts)
    assert levels.bins >= FEW_BINS
    assert choose_noise_model(levels) == "poisson-gaussian"
    # Gaussian noise clipped by an 8-bit file piles up at both ends.
    from skimage import data

    clipped = np.clip(np.round(data.camera().astype(float) + rng.normal(0, 25, (512, 512))), 0, 255)
    assert _pile_up(clipped, 0.0, low_end=True) and _pile_up(clipped, 255.0, low_end=False)
