"""Denoising by recorruption: the noisy image as the network's input, fresh noise split
between input and target at every step (``FitConfig.recorrupt_sigma``)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_dip.engine.fit import FitConfig, Fitter
from napari_dip.engine.forward import Identity, KnownPixels, LanczosDownsampler
from napari_dip.engine.losses import PoissonGaussianError, SquaredError
from napari_dip.engine.presets import settings_for
from napari_dip.engine.stopping import StoppingConfig
from napari_dip.errors import InputError
from napari_dip.restore import denoise, iter_restore, iter_restore_planes
from tiny import TINY, TINY_NET, noisy_grey, smooth_image

SIGMA = 0.08
# Without held-out pixels (tested apart below).
CPU = FitConfig(iterations=6, device="cpu", recorrupt_sigma=SIGMA, recorrupt_alpha=1.0,
                stopping=StoppingConfig(rule="none"))


def observation(size=32, channels=1, seed=0):
    return np.moveaxis(smooth_image(size, channels, seed), -1, 0)


class RecordingError(SquaredError):
    """The squared error, keeping every target it was given."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def forward(self, predicted, observation):
        self.targets.append(observation.detach().clone())
        return super().forward(predicted, observation)


def record_inputs(fitter):
    inputs = []
    network = fitter._forward

    def forward(x):
        inputs.append(x.detach().clone())
        return network(x)

    fitter._forward = forward
    return inputs


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_input_and_target_carry_the_same_fresh_noise_split_by_alpha(alpha):
    obs = observation(size=30)  # padded to 32 by the network: the image sits in the middle
    loss = RecordingError()
    fitter = Fitter(obs, Identity(), TINY_NET, replace(CPU, recorrupt_alpha=alpha), loss=loss)
    inputs = record_inputs(fitter)
    list(fitter.run(6))
    assert len(inputs) == len(loss.targets) == 6
    image = torch.as_tensor(obs)[None]
    draws = []
    for net_input, target in zip(inputs, loss.targets):
        assert net_input.shape == (1, 1, 32, 32)
        noise = (net_input[..., 1:31, 1:31] - image) / alpha
        # The target is the image less the same noise over alpha.
        torch.testing.assert_close(target, image - noise / alpha, atol=1e-5, rtol=0)
        draws.append(noise)
    # Fresh noise at every step, of the given level.
    assert not torch.equal(draws[0], draws[1])
    assert abs(float(torch.stack(draws).std()) - SIGMA) < 0.01
    # The padding repeats the edge: the fixed part of the input is the padded image.
    torch.testing.assert_close(fitter.input[..., 1:31, 1:31], image)
    torch.testing.assert_close(fitter.input[..., 0, 1:31], image[..., 0, :])


def test_the_network_takes_the_image_channels_and_the_record_says_so():
    fitter = Fitter(observation(channels=3), Identity(), TINY_NET, CPU)
    assert fitter.input.shape == (1, 3, 32, 32)
    assert fitter.network_config.input_channels == 3
    settings = list(fitter.run(6))[-1].settings
    assert settings["network"]["input_channels"] == 3
    assert settings["fit"]["recorrupt_sigma"] == SIGMA and settings["fit"]["recorrupt_alpha"] == 1.0
    # Without recorruption the input is the network's own noise, as before.
    plain = Fitter(observation(channels=3), Identity(), TINY_NET, replace(CPU, recorrupt_sigma=None))
    assert plain.input.shape == (1, TINY_NET.input_channels, 32, 32)


def test_runs_side_by_side_get_the_image_and_their_own_noise():
    loss = RecordingError()
    fitter = Fitter(observation(), Identity(), TINY_NET, replace(CPU, runs=2), loss=loss)
    inputs = record_inputs(fitter)
    list(fitter.run(6))
    assert inputs[0].shape == (1, 2, 32, 32)
    assert torch.equal(fitter.input[:, 0], fitter.input[:, 1])
    assert not torch.equal(inputs[0][:, 0], inputs[0][:, 1])
    assert loss.targets[0].shape == (2, 1, 32, 32)
    # Run k's target carries run k's fresh noise.
    image = torch.as_tensor(observation())[None]
    for net_input, target in zip(inputs, loss.targets):
        for k in range(2):
            noise = net_input[:, k:k + 1] - image
            torch.testing.assert_close(target[k:k + 1], image - noise, atol=1e-5, rtol=0)


def test_a_warm_start_keeps_the_weights_but_takes_the_new_image_as_input():
    first = Fitter(observation(seed=0), Identity(), TINY_NET, CPU)
    list(first.run(6))
    second = Fitter(observation(seed=1), Identity(), TINY_NET, CPU, initial_state=first.export_state())
    for name, value in second.network.state_dict().items():
        assert torch.equal(value, first.network.state_dict()[name]), name
    torch.testing.assert_close(second.input, torch.as_tensor(observation(seed=1))[None])


def test_held_out_pixels_score_each_steps_output_against_its_own_target():
    from napari_dip.engine.stopping import HeldOutPixels

    obs = observation(size=32)
    config = replace(CPU, stopping=StoppingConfig(rule="validation", holdout_fraction=0.1, holdout_block=1,
                                                  warmup=0, smoothing=0.75))
    fitter = Fitter(obs, Identity(), TINY_NET, config)
    assert isinstance(fitter.stopper, HeldOutPixels)
    # The network sees the whole image, held-out pixels included: input and target noise
    # are independent, so the fit cannot learn a held-out pixel's noise from its input.
    torch.testing.assert_close(fitter.input, torch.as_tensor(obs)[None])
    held = fitter.stopper.held
    assert 0 < int(held.sum()) < 32 * 32
    scores, update = [], fitter.stopper.update

    def recorded(iteration, output, average, predicted, target=None):
        assert target is not None and not torch.equal(target, torch.as_tensor(obs)[None])
        error = float((((predicted - target) ** 2) * held).sum() / held.sum())
        update(iteration, output, average, predicted, target)
        scores.append((error, float(fitter.stopper.smoothed)))

    fitter.stopper.update = recorded
    list(fitter.run(6))
    assert len(scores) == 6
    # The first score is the first step's error; later ones are smoothed as configured.
    assert scores[0][1] == pytest.approx(scores[0][0])
    for (_, before), (error, after) in zip(scores, scores[1:]):
        assert after == pytest.approx(0.75 * before + 0.25 * error)


def test_presets_stop_a_recorrupted_fit_on_a_smoother_score_and_a_smaller_rise():
    from napari_dip.engine.presets import DEFAULT_STOPPING, RECORRUPTION_STOPPING

    _, recorrupted = settings_for("denoise", "fast", noise_sigma=0.1)
    assert recorrupted.stopping == RECORRUPTION_STOPPING
    assert recorrupted.stopping.smoothing > DEFAULT_STOPPING["denoise"].smoothing
    assert recorrupted.stopping.rise < DEFAULT_STOPPING["denoise"].rise
    _, paper_way = settings_for("denoise", "fast", noise_sigma=0.1, recorrupt=False)
    assert paper_way.stopping == DEFAULT_STOPPING["denoise"]
    # A rule or patience the caller gives is kept; naming the default rule is the default.
    _, named = settings_for("denoise", "fast", noise_sigma=0.1, stopping="validation", patience=50)
    assert named.stopping == replace(RECORRUPTION_STOPPING, patience=50)
    own = StoppingConfig(rule="validation", rise=0.01)
    assert settings_for("denoise", "fast", noise_sigma=0.1, stopping=own)[1].stopping == own
    assert settings_for("denoise", "fast", noise_sigma=0.1, stopping="wmv")[1].stopping.rule == "wmv"


def test_a_warm_recorrupted_plane_waits_for_its_score_to_settle_and_stops_on_patience():
    from napari_dip.engine.presets import WARM_START_RECORRUPTION_WARMUP, warm_start_config

    _, recorrupted = settings_for("denoise", "fast", noise_sigma=0.1)
    warm = warm_start_config(recorrupted).stopping
    assert warm.warmup == WARM_START_RECORRUPTION_WARMUP > 0 and warm.rise is None
    assert warm.patience < recorrupted.stopping.patience
    # The paper's way keeps its trend test from the first step.
    _, paper_way = settings_for("denoise", "fast", noise_sigma=0.1, recorrupt=False)
    assert warm_start_config(paper_way).stopping.warmup == 0
    assert warm_start_config(paper_way).stopping.rise == paper_way.stopping.rise


def test_a_warm_plane_goes_on_at_half_the_rate_recorrupted_or_from_a_noise_input():
    from napari_dip.engine.presets import warm_start_config

    for task, kwargs in (("denoise", {"noise_sigma": 0.1}), ("denoise", {"noise_sigma": 0.1, "recorrupt": False}),
                         ("super-resolve", {"factor": 4}), ("inpaint", {})):
        _, fit = settings_for(task, "fast", **kwargs)
        assert (fit.recorrupt_sigma is not None) == (kwargs.get("recorrupt") is None and task == "denoise")
        assert warm_start_config(fit).learning_rate == pytest.approx(fit.learning_rate / 2), (task, kwargs)


def test_recorruption_fits_denoising_only_with_the_squared_error():
    with pytest.raises(InputError, match="denoising only.*Lanczos"):
        Fitter(observation(), LanczosDownsampler(4, 1), TINY_NET, CPU)
    known = np.ones((1, 32, 32), np.float32)
    with pytest.raises(InputError, match="denoising only.*known-pixel"):
        Fitter(observation(), KnownPixels(known), TINY_NET, CPU)
    poisson = PoissonGaussianError([0.01], [0.001], torch.as_tensor(observation()))
    with pytest.raises(InputError, match="one level"):
        Fitter(observation(), Identity(), TINY_NET, CPU, loss=poisson)
    with pytest.raises(InputError, match="recorrupt_sigma must be positive"):
        FitConfig(recorrupt_sigma=0.0)
    with pytest.raises(InputError, match="recorrupt_alpha must be positive"):
        FitConfig(recorrupt_alpha=0.0)


def test_presets_choose_recorruption_when_the_noise_level_is_known():
    _, fast = settings_for("denoise", "fast", noise_sigma=0.1)
    assert fast.recorrupt_sigma == 0.1 and fast.reg_noise_std == 0.0
    assert fast.recorrupt_alpha == pytest.approx(1 + 0.1 / (50 / 255))
    _, given = settings_for("denoise", "paper", recorrupt=True, recorrupt_sigma=0.3)
    assert given.recorrupt_sigma == 0.3 and given.recorrupt_alpha == 2.0
    # A level given wins over the estimate, for alpha too, and turns recorruption on.
    _, both = settings_for("denoise", "paper", noise_sigma=0.2, recorrupt_sigma=0.05)
    assert both.recorrupt_sigma == 0.05 and both.recorrupt_alpha == 1.5 and both.reg_noise_std == 0.0
    with pytest.raises(InputError, match="contradict"):
        settings_for("denoise", "fast", noise_sigma=0.1, recorrupt=False, recorrupt_sigma=0.05)
    # No noise found (level 0): the paper's way by default, and a clear refusal if asked.
    _, silent = settings_for("denoise", "fast", noise_sigma=0.0)
    assert silent.recorrupt_sigma is None
    with pytest.raises(InputError, match="none was found.*recorrupt=False"):
        settings_for("denoise", "fast", noise_sigma=0.0, recorrupt=True)
    _, paper = settings_for("denoise", "paper", noise_sigma=0.1)
    assert paper.recorrupt_sigma is None and paper.reg_noise_std > 0
    _, unknown = settings_for("denoise", "fast")
    assert unknown.recorrupt_sigma is None
    _, off = settings_for("denoise", "fast", noise_sigma=0.1, recorrupt=False)
    assert off.recorrupt_sigma is None and off.reg_noise_std > 0
    _, on = settings_for("denoise", "paper", noise_sigma=0.1, recorrupt=True)
    assert on.recorrupt_sigma == 0.1
    _, sr = settings_for("super-resolve", "fast", factor=4, noise_sigma=0.1)
    assert sr.recorrupt_sigma is None
    # An input jitter asked for is the paper's way: no recorruption, and not both at once.
    _, jittered = settings_for("denoise", "fast", noise_sigma=0.1, reg_noise_std=0.05)
    assert jittered.recorrupt_sigma is None and jittered.reg_noise_std == 0.05
    with pytest.raises(InputError, match="not both"):
        settings_for("denoise", "fast", noise_sigma=0.1, reg_noise_std=0.05, recorrupt=True)
    with pytest.raises(InputError, match="noise level"):
        settings_for("denoise", "fast", recorrupt=True)
    with pytest.raises(InputError, match="way of denoising"):
        settings_for("inpaint", "fast", recorrupt=True)


def test_recorrupted_fits_take_adam_with_a_shorter_memory_of_squared_gradients():
    _, fast = settings_for("denoise", "fast", noise_sigma=0.1)
    assert fast.adam_beta2 == 0.95
    # The paper network's recorrupted fits too (measured on a GPU at 512²).
    _, paper = settings_for("denoise", "paper", noise_sigma=0.1, recorrupt=True)
    assert paper.adam_beta2 == 0.95
    # The paper's way, a given jitter and the other tasks on the paper network keep Adam's
    # usual 0.999 (fast's super-resolution and inpainting schedules are tested with the
    # presets); the caller's value wins.
    for task, preset, options in [("denoise", "fast", {"recorrupt": False}), ("denoise", "paper", {}),
                                  ("denoise", "fast", {"reg_noise_std": 0.05}), ("inpaint", "paper", {})]:
        assert settings_for(task, preset, noise_sigma=0.1, **options)[1].adam_beta2 == 0.999
    assert settings_for("denoise", "fast", noise_sigma=0.1, adam_beta2=0.9)[1].adam_beta2 == 0.9
    # Photon-limited noise through the Anscombe transform lost with 0.95 (6 FMD crops).
    photon = settings_for("denoise", "fast", noise_sigma=0.1, photon_limited=True)[1]
    assert photon.recorrupt_sigma == 0.1 and photon.adam_beta2 == 0.999
    # Through the API: the noise model decides.
    rng = np.random.default_rng(0)
    counts = np.tile(np.linspace(5, 50, 32), (32, 1))
    photons = (rng.poisson(counts) * 4).astype(np.uint16)
    grey = np.clip(counts / 60 + rng.normal(0, 0.1, counts.shape), 0, 1).astype(np.float32)
    for image, noise, beta2 in [(photons, "poisson-gaussian", 0.999), (grey, "gaussian", 0.95)]:
        final = list(iter_restore("denoise", image, noise=noise, iterations=2, device="cpu", network=TINY_NET))[-1]
        assert final.settings["fit"]["recorrupt_sigma"] > 0
        assert final.settings["fit"]["adam_beta2"] == beta2
    fitter = Fitter(observation(), Identity(), TINY_NET, replace(CPU, adam_beta2=0.95))
    assert fitter.optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="adam_beta2"):
            FitConfig(adam_beta2=bad)


def test_fast_recorrupts_with_its_smaller_network_and_sizes_tiles_on_the_larger():
    from napari_dip.engine.networks import FAST_DENOISE, FAST_RECORRUPT, PAPER
    from napari_dip.engine.presets import network_for
    from napari_dip.restore import _Job

    recorrupting, fit = settings_for("denoise", "fast", noise_sigma=0.1)
    assert fit.recorrupt_sigma == 0.1 and recorrupting == FAST_RECORRUPT
    assert recorrupting.scales == 3 and recorrupting.channels_down == (16,) * 3
    assert network_for("denoise", "fast", recorrupt=True) == FAST_RECORRUPT
    # Not recorrupting (no level known, or refused): the 5-scale denoising network.
    assert settings_for("denoise", "fast")[0] == FAST_DENOISE
    assert settings_for("denoise", "fast", noise_sigma=0.1, recorrupt=False)[0] == FAST_DENOISE
    # A width given widens that network; a network given is used as it is; paper keeps its own.
    wider, _ = settings_for("denoise", "fast", noise_sigma=0.1, channels=24)
    assert wider.scales == 3 and wider.channels_down == (24,) * 3
    assert settings_for("denoise", "fast", noise_sigma=0.1, network=TINY_NET)[0] == TINY_NET
    assert settings_for("denoise", "paper", noise_sigma=0.1, recorrupt=True)[0] == PAPER
    # The fit runs the small network; memory and tiles are sized on the 5-scale one, which
    # is what the command line and the widget estimate before knowing whether it recorrupts.
    job = _Job("denoise", noisy_grey(0, size=64), preset="fast", device="cpu", iterations=2)
    assert job.fit_config.recorrupt_sigma is not None
    assert job.net == FAST_RECORRUPT and job.sizing_net == FAST_DENOISE
    narrow = _Job("denoise", noisy_grey(0, size=64), preset="fast", device="cpu", iterations=2, channels=8)
    assert narrow.net.scales == 3 and narrow.sizing_net == FAST_DENOISE.with_width(8)
    plain = _Job("denoise", noisy_grey(0, size=64), preset="fast", device="cpu", iterations=2, recorrupt=False)
    assert plain.net == plain.sizing_net == FAST_DENOISE


def test_the_numpy_api_recorrupts_with_the_estimated_noise_level():
    snap = list(iter_restore("denoise", noisy_grey(0), preset="fast", iterations=4, snapshot_every=None, **TINY))[-1]
    fit = snap.settings["fit"]
    assert fit["recorrupt_sigma"] == pytest.approx(snap.settings["noise_sigma_estimate"])
    assert 0.05 < fit["recorrupt_sigma"] < 0.12  # noisy_grey's noise is 0.08 of the range
    assert snap.settings["network"]["input_channels"] == 1
    plain = list(iter_restore("denoise", noisy_grey(0), preset="fast", iterations=4, snapshot_every=None,
                              recorrupt=False, **TINY))[-1]
    assert plain.settings["fit"]["recorrupt_sigma"] is None
    assert plain.settings["network"]["input_channels"] == TINY_NET.input_channels


def test_a_weighted_poisson_fit_is_not_recorrupted():
    rng = np.random.default_rng(0)
    counts = rng.poisson(smooth_image(32) * 40).astype(np.uint16) * 10 + 100
    stream = iter_restore("denoise", counts, preset="fast", iterations=3, snapshot_every=None,
                          noise="poisson-gaussian", noise_fit="weighted", **TINY)
    # Settled before the first step, and said: the preset would have recorrupted.
    assert stream.recorrupts is False and "weighted" in stream.settings["recorruption_note"]
    snap = list(stream)[-1]
    assert snap.settings["fit"]["recorrupt_sigma"] is None and "weighted" in snap.settings["recorruption_note"]
    asked = list(iter_restore("denoise", counts, preset="fast", iterations=3, snapshot_every=None,
                              noise="poisson-gaussian", noise_fit="weighted", recorrupt=False, **TINY))[-1]
    assert asked.settings["recorruption_note"] is None  # the caller's choice needs no note
    with pytest.raises(InputError, match="noise_fit='gat'"):
        list(iter_restore("denoise", counts, preset="fast", iterations=3, noise="poisson-gaussian",
                          noise_fit="weighted", recorrupt=True, **TINY))
    # Through the transform the noise has one level: recorrupted at that level, by default
    # as when asked for; the paper's way when asked for.
    gat = list(iter_restore("denoise", counts, preset="fast", iterations=3, snapshot_every=None,
                            noise="poisson-gaussian", noise_fit="gat", recorrupt=True, **TINY))[-1]
    assert gat.settings["fit"]["recorrupt_sigma"] == pytest.approx(gat.settings["noise_sigma_estimate"])
    default = list(iter_restore("denoise", counts, preset="fast", iterations=3, snapshot_every=None,
                                noise="poisson-gaussian", **TINY))[-1]
    assert default.settings["noise"]["fit"] == "gat"
    assert default.settings["fit"] == gat.settings["fit"] and default.settings["recorruption_note"] is None
    np.testing.assert_array_equal(default.average, gat.average)
    paper = list(iter_restore("denoise", counts, preset="fast", iterations=3, snapshot_every=None,
                              noise="poisson-gaussian", recorrupt=False, **TINY))[-1]
    assert paper.settings["fit"]["recorrupt_sigma"] is None and paper.settings["fit"]["reg_noise_std"] > 0


def test_noise_correlated_between_neighbours_is_fitted_the_papers_way():
    rng = np.random.default_rng(2)
    white = rng.normal(0, 0.16, (65, 65))
    # Each pixel's noise shared with its neighbours (a 2 x 2 box): lag-1 correlation 0.5.
    correlated = (white[:-1, :-1] + white[1:, :-1] + white[:-1, 1:] + white[1:, 1:]) / 4
    image = np.clip(smooth_image(64) + correlated, 0, 1).astype(np.float32)
    stream = iter_restore("denoise", image, preset="fast", iterations=2, snapshot_every=None, **TINY)
    assert stream.recorrupts is False and "correlated" in stream.settings["recorruption_note"]
    snap = list(stream)[-1]
    assert snap.settings["fit"]["recorrupt_sigma"] is None
    assert "correlated" in snap.settings["recorruption_note"]
    # Asked for, it is done all the same; white noise is recorrupted by default.
    asked = list(iter_restore("denoise", image, preset="fast", iterations=2, snapshot_every=None, recorrupt=True,
                              **TINY))[-1]
    assert asked.settings["fit"]["recorrupt_sigma"] and asked.settings["recorruption_note"] is None
    # The note is only for fits the preset would have recorrupted.
    for settings in ({"preset": "paper"}, {"preset": "fast", "reg_noise_std": 0.02}):
        other = list(iter_restore("denoise", image, iterations=2, snapshot_every=None, **settings, **TINY))[-1]
        assert other.settings["recorruption_note"] is None
    white_image = np.clip(smooth_image(64) + white[:64, :64] / 2, 0, 1).astype(np.float32)
    stream = iter_restore("denoise", white_image, preset="fast", iterations=2, snapshot_every=None, **TINY)
    assert stream.recorrupts is True
    plain = list(stream)[-1]
    assert plain.settings["fit"]["recorrupt_sigma"] and plain.settings["recorruption_note"] is None


def test_a_stack_whose_sampled_planes_are_constant_is_fitted_the_papers_way():
    # 65 planes, only one varying: the planes sampled for the noise level are all constant,
    # so no level is found; the stack is restored the paper's way instead of refused.
    stack = np.zeros((65, 16, 16), np.uint8)
    stack[1] = noisy_grey(0, size=16)
    stream = iter_restore_planes("denoise", stack, axes="ZYX", preset="fast", iterations=2, snapshot_every=None,
                                 **TINY)
    assert stream.recorrupts is False and "no noise" in stream.settings["recorruption_note"]
    finals = [snap for _, snap in stream if snap.done]
    fitted = [s for s in finals if s.iteration > 0]
    assert len(fitted) == 1 and fitted[0].settings["fit"]["recorrupt_sigma"] is None
    assert "no noise" in fitted[0].settings["recorruption_note"]


def test_stacks_are_recorrupted_plane_by_plane_with_a_warm_start():
    stack = np.stack([noisy_grey(0), noisy_grey(1)])
    stream = iter_restore_planes("denoise", stack, axes="ZYX", preset="fast", iterations=4, snapshot_every=None,
                                 **TINY)
    assert stream.recorrupts is True and stream.settings["preset"] == "fast"
    finals = [snap for _, snap in stream if snap.done]
    assert len(finals) == 2 and all(s.settings["fit"]["recorrupt_sigma"] for s in finals)
    assert finals[1].settings["warm_start"] is not None


def test_recorruption_denoises_a_smooth_image():
    clean = smooth_image(48)
    rng = np.random.default_rng(1)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    # 300 steps: at 150 the tiny network's result still swung with the seed and with a 3 %
    # change of the estimated noise level (error ratio 0.26-0.66); at 300 it was 0.06-0.10.
    restored = denoise(noisy, preset="fast", iterations=300, stopping="none", **TINY)

    def error(image):
        return float(np.mean((image - clean) ** 2))

    assert error(restored) < 0.25 * error(noisy)


def test_the_api_passes_the_preset_as_asked_so_auto_recorrupts_whichever_network_it_picks(monkeypatch):
    from napari_dip.engine import presets
    from napari_dip.engine.networks import PAPER
    from napari_dip.restore import _Job

    # auto resolved as on a CUDA machine (the fit itself is only planned, on the CPU).
    monkeypatch.setattr(presets, "resolve_device", lambda name="auto": torch.device("cuda:0"))
    image = noisy_grey(0, size=64)
    auto = _Job("denoise", image, device="cpu", iterations=2)
    assert auto.resolved_preset == "paper" and auto.net == PAPER
    assert auto.fit_config.recorrupt_sigma > 0 and auto.fit_config.adam_beta2 == 0.95
    assert auto.description["preset_requested"] == "auto"
    named = _Job("denoise", image, preset="paper", device="cpu", iterations=2)
    assert named.net == PAPER and named.fit_config.recorrupt_sigma is None
    assert named.fit_config.adam_beta2 == 0.999
