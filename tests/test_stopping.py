"""Stopping rules on synthetic sequences whose best iteration is known, and in a real fit."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_dip import iter_restore
from napari_dip.errors import InputError
from napari_dip.engine.fit import FitConfig, Fitter
from napari_dip.engine.forward import Identity, KnownPixels
from napari_dip.engine.presets import settings_for
from napari_dip.engine.stopping import HeldOutPixels, StoppingConfig, WindowedVariance
from tiny import TINY, TINY_NET, smooth_image

CPU = torch.device("cpu")


def converge_then_drift(clean, iteration, turn, rng):
    """Outputs that approach ``clean`` with shrinking jitter until ``turn``, then wander off
    with growing jitter: the variance of a window is smallest for windows around ``turn``."""
    if iteration <= turn:
        scale = 0.2 * (1 - iteration / turn) + 0.005
    else:
        scale = 0.005 + 0.02 * (iteration - turn) / 10
    return clean + scale * torch.as_tensor(rng.standard_normal(clean.shape), dtype=torch.float32)


def test_windowed_variance_finds_the_turn_and_stops_after_patience():
    rng = np.random.default_rng(0)
    clean = torch.rand(1, 1, 24, 24)
    config = StoppingConfig(window=10, patience=30, warmup=5)
    rule = WindowedVariance(config, (1, 24, 24), CPU, seed=0)
    turn = 60
    stopped_at = None
    for iteration in range(1, 200):
        output = converge_then_drift(clean, iteration, turn, rng)
        rule.update(iteration, output, output)
        if rule.should_stop(iteration):
            stopped_at = iteration
            break
    best = rule.best_iteration()
    # a window ending at iteration t covers t-9..t: the quietest one straddles the turn
    assert turn <= best <= turn + config.window
    assert stopped_at == best + 30
    # the result kept is the output of the best iteration, not the last one
    last_error = torch.mean((output - clean) ** 2)
    assert torch.mean((rule.best_average - clean) ** 2) < 0.1 * last_error


def test_windowed_variance_warmup_ignores_flat_early_outputs():
    config = StoppingConfig(window=5, patience=10, warmup=50)
    rule = WindowedVariance(config, (1, 8, 8), CPU, seed=0)
    flat = torch.zeros(1, 1, 8, 8)
    for iteration in range(1, 40):  # perfectly flat: zero variance, but inside the warm-up
        rule.update(iteration, flat, flat)
        assert not rule.should_stop(iteration)
    assert rule.best_iteration() is None


def test_windowed_variance_samples_large_images():
    config = StoppingConfig(window=4, max_samples=100)
    rule = WindowedVariance(config, (3, 64, 64), CPU, seed=0)
    assert rule.buffer.shape == (4, 100)
    assert rule.indices.unique().numel() == 100


def test_windowed_variance_running_sums_match_the_window_recomputed_from_scratch():
    # Bright, slowly drifting outputs with tiny fluctuations are the hard case for running
    # sums (large squares, small variance); every score must equal the direct computation.
    rng = np.random.default_rng(1)
    config = StoppingConfig(window=7, warmup=0, max_samples=50)
    rule = WindowedVariance(config, (2, 9, 9), CPU, seed=0)
    outputs = []
    for iteration in range(1, 60):
        output = 0.8 + 1e-3 * iteration + 1e-3 * torch.as_tensor(rng.standard_normal((1, 2, 9, 9)), dtype=torch.float32)
        outputs.append(output.reshape(-1)[rule.indices])
        rule.update(iteration, output, output)
        if iteration >= config.window:
            window = torch.stack(outputs[-config.window :]).double()
            expected = window.var(dim=0, unbiased=False).mean()
            assert float(rule.last_score) == pytest.approx(float(expected), rel=1e-5)


def test_held_out_validation_error_is_smallest_at_the_clean_image():
    # Observation = clean + noise. Averages move from a blank image to the clean one and on
    # towards the noisy observation on the pixels the fit sees (overfitting); the held-out
    # pixels are never seen. Held-out error is smallest at the clean image.
    rng = np.random.default_rng(1)
    clean = torch.as_tensor(smooth_image(48))[None, None]
    noisy = clean + 0.1 * torch.as_tensor(rng.standard_normal(clean.shape), dtype=torch.float32)
    config = StoppingConfig(rule="validation", patience=20, warmup=0, smoothing=0.0, holdout_fraction=0.2)
    rule = HeldOutPixels(config, noisy, None, seed=0)
    assert 0.15 < float(rule.held.mean()) < 0.25
    assert torch.equal(rule.train_weight + rule.held, torch.ones_like(noisy))
    seen = rule.train_weight
    path = [clean * t / 40 for t in range(41)] + [clean + (noisy - clean) * seen * t / 40 for t in range(1, 41)]
    stopped_at = None
    for iteration, average in enumerate(path, start=1):
        rule.update(iteration, average, average, average)
        if rule.should_stop(iteration):
            stopped_at = iteration
            break
    assert rule.best_iteration() in (40, 41, 42)
    assert stopped_at == rule.best_iteration() + 20


def test_held_out_pixels_come_only_from_observed_pixels():
    known = torch.zeros(1, 1, 32, 32)
    known[..., :16] = 1
    rule = HeldOutPixels(StoppingConfig(rule="validation", holdout_fraction=0.3), torch.rand(1, 1, 32, 32), known, 0)
    assert float(rule.held[..., 16:].sum()) == 0 and float(rule.held[..., :16].sum()) > 0
    assert float(rule.train_weight[..., 16:].sum()) == 0


def test_validation_fit_leaves_held_out_pixels_out_of_the_loss():
    image = np.moveaxis(smooth_image(32, channels=1), -1, 0)
    config = FitConfig(iterations=5, device="cpu", stopping=StoppingConfig(rule="validation", holdout_fraction=0.2))
    fitter = Fitter(image, Identity(), TINY_NET, config)
    corrupted = image.copy()
    held = fitter.stopper.held[0].numpy() > 0
    corrupted[held] = 50.0  # garbage on held-out pixels must not change the fit
    other = Fitter(corrupted, Identity(), TINY_NET, config)
    a = list(fitter.run(5))[-1]
    b = list(other.run(5))[-1]
    np.testing.assert_allclose(a.output, b.output, atol=1e-6)


@pytest.mark.parametrize("rule", ["wmv", "validation"])
def test_fit_stops_by_itself_and_returns_the_best_iteration(rule):
    image = np.moveaxis(smooth_image(32, channels=1), -1, 0)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.15, image.shape), 0, 1).astype(np.float32)
    stopping = StoppingConfig(rule=rule, window=10, patience=40, warmup=20)
    config = FitConfig(iterations=3000, device="cpu", learning_rate=0.05, check_every=10, stopping=stopping)
    fitter = Fitter(noisy, Identity(), TINY_NET, config)
    snaps = list(fitter.run(snapshot_every=50))
    final = snaps[-1]
    assert final.done and final.stop_reason == rule
    assert final.iteration < 3000
    assert final.best_iteration is not None and final.iteration - final.best_iteration >= 40
    np.testing.assert_array_equal(final.average, fitter.stopper.best_average[0].numpy())


def test_stopping_can_be_turned_off_and_the_budget_runs_out():
    image = smooth_image(32)
    final = list(iter_restore("denoise", image, iterations=30, stopping="none", snapshot_every=None, **TINY))[-1]
    assert final.stop_reason == "budget" and final.iteration == 30 and final.best_iteration is None
    assert final.settings["fit"]["stopping"]["rule"] == "none"


def test_defaults_and_overrides_through_the_presets():
    _, fit = settings_for("denoise")
    assert fit.stopping.rule != "none"
    _, fit = settings_for("inpaint", stopping="validation", patience=77)
    assert fit.stopping.rule == "validation" and fit.stopping.patience == 77


@pytest.mark.parametrize(
    "options",
    [{"rule": "psnr"}, {"window": 1}, {"holdout_fraction": 0.7}, {"patience": 0}],
)
def test_bad_stopping_settings_are_explained(options):
    with pytest.raises(InputError):
        StoppingConfig(**options)


def test_inpainting_validation_needs_observed_pixels_to_hold_out():
    known = np.zeros((1, 32, 32), np.float32)
    known[0, 0, 0] = 1  # one observed pixel: nothing sensible to hold out
    config = FitConfig(iterations=2, device="cpu", stopping=StoppingConfig(rule="validation", holdout_fraction=0.01))
    with pytest.raises(InputError, match="hold some out"):
        Fitter(np.zeros((1, 32, 32), np.float32), KnownPixels(known), TINY_NET, replace(config, seed=5))


def test_denoising_jitter_grows_with_the_noise_within_its_bounds():
    from napari_dip.engine.presets import DENOISING_JITTER_RANGE, denoising_jitter

    low, high = DENOISING_JITTER_RANGE
    assert denoising_jitter(0.0) == low and denoising_jitter(1.0) == high
    assert denoising_jitter(0.15) == pytest.approx(0.05)
    assert settings_for("denoise", noise_sigma=0.15, recorrupt=False)[1].reg_noise_std == pytest.approx(0.05)
    assert settings_for("denoise", "paper", noise_sigma=0.15)[1].reg_noise_std == pytest.approx(0.05)
    assert settings_for("denoise", noise_sigma=0.15, reg_noise_std=0.0)[1].reg_noise_std == 0.0
    assert settings_for("inpaint", noise_sigma=0.15)[1].reg_noise_std == 0.03


def test_trend_test_stops_once_the_score_has_clearly_risen():
    from napari_dip.engine.stopping import _BestTracker

    config = StoppingConfig(rule="validation", patience=100, warmup=0, rise=0.01, min_wait=5)
    tracker = _BestTracker(config, torch.device("cpu"))
    image = torch.zeros(1, 1, 4, 4)
    scores = [1.0, 0.9, 0.8, 0.805, 0.806, 0.807, 0.808, 0.809, 0.81, 0.82]
    stops = []
    for iteration, score in enumerate(scores, start=1):
        tracker.step.add_(1)
        tracker._record(torch.tensor(score), iteration, image, image)
        stops.append(tracker.should_stop(iteration))
    # Best at 3 (0.8); 0.809 at 8 is 1.1 % above it and 5 iterations later: stop there, not
    # 100 iterations later. A small rise (0.805) or one too soon does not stop it.
    assert stops.index(True) == 7
    assert tracker.best_iteration() == 3
    without = StoppingConfig(rule="validation", patience=100, warmup=0)
    assert without.rise is None
    with pytest.raises(InputError):
        StoppingConfig(rise=0)


def test_denoising_default_uses_the_trend_test_and_other_rules_their_own_defaults():
    _, fit = settings_for("denoise")
    assert fit.stopping.rule == "validation" and fit.stopping.patience == 100 and fit.stopping.rise == 0.005
    _, fit = settings_for("denoise", stopping="wmv")
    assert fit.stopping.rule == "wmv" and fit.stopping.patience == 1000 and fit.stopping.rise is None
    _, fit = settings_for("super-resolve", factor=4, stopping="validation")
    assert fit.stopping.patience == 300 and fit.stopping.rise is None


def correlated_noise(shape, seed=0):
    """White noise smoothed over neighbours: correlation about 0.5 at lag 1, 0 beyond 2."""
    white = torch.as_tensor(np.random.default_rng(seed).standard_normal((1, 1, shape[0] + 1, shape[1] + 1)),
                            dtype=torch.float32)
    return torch.nn.functional.avg_pool2d(white, 2, stride=1) * 2


def test_neighbour_noise_correlation_tells_correlated_noise_from_white_noise_and_structure():
    from napari_dip.engine.stopping import CORRELATED_NOISE, neighbour_noise_correlation

    clean = torch.as_tensor(smooth_image(64))[None, None]
    white = torch.as_tensor(np.random.default_rng(0).standard_normal(clean.shape), dtype=torch.float32)
    assert abs(neighbour_noise_correlation(white)) < 0.1
    assert neighbour_noise_correlation(clean + 0.1 * white) < CORRELATED_NOISE
    assert neighbour_noise_correlation(clean + 0.1 * correlated_noise((64, 64))) > CORRELATED_NOISE
    assert neighbour_noise_correlation(torch.zeros(1, 1, 32, 32)) == 0.0


def test_correlated_noise_holds_out_blocks_so_no_neighbour_is_fitted():
    from napari_dip.engine.stopping import CORRELATED_NOISE_BLOCK

    clean = torch.as_tensor(smooth_image(64))[None, None]
    noisy = clean + 0.1 * correlated_noise((64, 64))
    config = StoppingConfig(rule="validation", holdout_fraction=0.15)
    rule = HeldOutPixels(config, noisy, None, seed=0)
    assert rule.block == CORRELATED_NOISE_BLOCK == 7 and rule.noise_correlation > 0.4
    held = rule.held[0, 0] > 0
    assert 0.01 < float(held.float().mean()) < 0.033  # holdout_fraction / 7
    # Every held-out pixel's 7x7 neighbourhood is out of the loss; the rest is in it.
    grown = torch.nn.functional.max_pool2d(held[None, None].float(), 7, stride=1, padding=3)[0, 0] > 0
    assert torch.equal(rule.train_weight[0, 0] == 0, grown)
    # White noise: single pixels, as before; and the block can be given.
    white = clean + 0.1 * torch.as_tensor(np.random.default_rng(1).standard_normal(clean.shape), dtype=torch.float32)
    assert HeldOutPixels(config, white, None, seed=0).block == 1
    assert HeldOutPixels(replace(config, holdout_block=1), noisy, None, seed=0).block == 1
    assert HeldOutPixels(replace(config, holdout_block=3), white, None, seed=0).block == 3
    with pytest.raises(InputError, match="holdout_block"):
        StoppingConfig(holdout_block=2)


def test_block_held_out_validation_turns_up_when_the_fit_follows_correlated_noise():
    # Averages move from blank to the clean image, then follow the correlated noise on the
    # pixels the fit sees: with single held-out pixels the neighbours' noise predicts theirs
    # and the error keeps falling; with blocks it turns up at the clean image.
    clean = torch.as_tensor(smooth_image(64))[None, None]
    noise = 0.1 * correlated_noise((64, 64), seed=3)
    noisy = clean + noise
    smooth = lambda x: torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def best(block):
        config = StoppingConfig(rule="validation", patience=1000, warmup=0, smoothing=0.0, holdout_block=block)
        rule = HeldOutPixels(config, noisy, None, seed=0)
        seen = rule.train_weight
        # A network that fits the seen pixels' noise carries it smoothly onto their neighbours.
        followed = smooth(noise * seen) / smooth(seen).clamp_min(1e-6)
        path = [clean * t / 40 for t in range(41)] + [clean + followed * t / 40 for t in range(1, 41)]
        for iteration, average in enumerate(path, start=1):
            rule.update(iteration, average, average, average)
        return rule.best_iteration()

    assert best(1) > 60
    assert best(5) in range(38, 46)


# -- the expected stop that progress bars and ETAs count to ----------------------------------

RECORRUPTED_RULE = StoppingConfig(rule="validation", patience=100, rise=0.002, warmup=200, smoothing=0.99)


def _levelling(rate, until=400, floor=1.0, height=0.5):
    """A held-out error falling ever more slowly towards ``floor``: ``(iteration, score)`` at every check."""
    return [(i, floor + height * rate**i) for i in range(25, until + 1, 25)]


def test_a_slowly_levelling_score_is_expected_to_stop_later_than_the_patience_stop():
    from napari_dip.engine.stopping import patience_stop, expected_stop

    at_patience = patience_stop(RECORRUPTED_RULE, 400, 400, 3000, 25)
    slow = expected_stop(RECORRUPTED_RULE, 400, 400, 3000, 25, _levelling(0.997), noise=0.003)
    fast = expected_stop(RECORRUPTED_RULE, 400, 400, 3000, 25, _levelling(0.98), noise=0.003)
    assert at_patience == 500
    # Still falling steeply: the stop lies well beyond best + patience, on the check grid.
    assert slow > 700 and slow % 25 == 0
    # Levelled off long ago: nothing to project, best + patience stands.
    assert fast == at_patience
    # A noisier score stops sooner: it hides a small fall sooner.
    assert expected_stop(RECORRUPTED_RULE, 400, 400, 3000, 25, _levelling(0.997), noise=0.01) < slow
    # Never beyond the budget.
    assert expected_stop(RECORRUPTED_RULE, 400, 400, 600, 25, _levelling(0.997), noise=0.003) == 600


@pytest.mark.parametrize(
    "history, noise",
    [
        ([(i, 2.0 - 0.001 * i) for i in range(25, 401, 25)], 0.003),  # a straight fall: no level in sight
        ([(i, 1.0 + 0.001 * i) for i in range(25, 401, 25)], 0.003),  # rising
        (_levelling(0.997)[:3], 0.003),  # too few checks
        (_levelling(0.997), None),  # the rule's noise is not known (ES-WMV)
        ([(i, float("nan")) for i in range(25, 401, 25)], 0.003),
        # A score lost to a blow-up at the last check, after a fall that projects to 1325.
        (_levelling(0.997)[:-1] + [(400, float("nan"))], 0.003),
        (_levelling(0.997)[:-1] + [(400, float("inf"))], 0.003),
        (_levelling(0.997)[:-1] + [(400, 0.0)], 0.003),
    ],
)
def test_without_a_projection_that_holds_the_patience_stop_is_expected(history, noise):
    from napari_dip.engine.stopping import patience_stop, expected_stop

    assert expected_stop(RECORRUPTED_RULE, 400, 400, 3000, 25, history, noise) == patience_stop(
        RECORRUPTED_RULE, 400, 400, 3000, 25
    )


def _ramped_rule(steps: int, warmup: int):
    """A held-out rule fed averages that ramp up to the image over ``steps`` iterations,
    asked at a check every 10; and the image."""
    observation = torch.as_tensor(smooth_image(32))[None, None]
    config = StoppingConfig(rule="validation", patience=50, warmup=warmup, smoothing=0.9, holdout_fraction=0.1)
    rule = HeldOutPixels(config, observation, None, seed=0)
    for iteration in range(1, steps + 1):
        estimate = observation * iteration / steps
        rule.update(iteration, estimate, estimate, estimate)
        if iteration % 10 == 0:
            rule.should_stop(iteration)
    return rule, observation


def test_held_out_rule_keeps_its_score_at_every_check_from_the_first_and_knows_its_noise():
    rule, _ = _ramped_rule(30, warmup=20)
    # Warm-up included: the projection can start before any best is recorded.
    assert [i for i, _ in rule.history] == [10, 20, 30]
    scores = [s for _, s in rule.history]
    assert scores[0] > scores[1] > scores[2]
    count = float(rule.held_count)
    assert rule.score_noise() == pytest.approx((2 / count) ** 0.5 * (0.1 / 1.9) ** 0.5)


def test_after_a_backtrack_the_held_out_score_is_the_checkpoints_and_the_estimate_holds():
    from tiny import CountingModel

    rng = np.random.default_rng(0)
    clean = smooth_image(32)[None]
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    stopping = StoppingConfig(rule="validation", patience=400, warmup=10, rise=0.002, smoothing=0.9)
    config = FitConfig(iterations=300, device="cpu", check_every=5, stopping=stopping)
    # Two forward calls an iteration (the loss's, then the rule's): call 161 is the loss's
    # at iteration 81, whose NaN the fit backtracks from; the rule saw it too.
    fitter = Fitter(noisy, CountingModel(poison_at=161), TINY_NET, config)
    snaps = list(fitter.run(snapshot_every=5))
    assert snaps[-1].backtracks == 1
    # Checked at 80 (healthy: the checkpoint), blown up at 81, backtracked at the check of
    # 85: the rule's score there is the checkpoint's again.
    scores = dict(fitter.stopper.history)
    assert scores[85] == scores[80]
    after = [score for iteration, score in fitter.stopper.history if iteration > 85]
    assert after and np.isfinite(after).all()  # not NaN for good
    # The rule works again: it found bests after the blow-up (a NaN score never beats one).
    assert snaps[-1].best_iteration > 85
    assert all(s.iteration <= s.expected_stop <= 300 for s in snaps)


def test_a_backtrack_puts_the_held_out_score_back_as_it_was_at_the_checkpoint():
    rule, observation = _ramped_rule(10, warmup=0)
    kept = rule.score_state()
    blown = torch.full_like(observation, float("nan"))
    rule.update(11, blown, blown, blown)
    assert not torch.isfinite(rule.smoothed)
    rule.restore_score(kept)
    assert float(rule.smoothed) == float(kept) and rule._current_score() is not None
    # A checkpoint from before the first score starts the rule afresh.
    fresh = HeldOutPixels(rule.config, observation, None, seed=0)
    assert fresh.score_state() is None
    fresh.update(1, blown, blown, blown)
    fresh.restore_score(None)
    fresh.update(2, observation, observation, observation)
    assert float(fresh.smoothed) == 0.0


def test_after_a_backtrack_es_wmv_scores_the_checkpoints_window_not_the_blow_up():
    from tiny import CountingModel

    clean = smooth_image(32)[None]
    stopping = StoppingConfig(rule="wmv", patience=400, warmup=10, window=20)
    config = FitConfig(iterations=130, device="cpu", check_every=5, stopping=stopping)
    # One forward call an iteration: call 81 poisons iteration 81's loss, its gradients
    # and so the outputs of 82-85; the check of 85 backtracks to the checkpoint of 80.
    fitter = Fitter(clean, CountingModel(poison_at=81), TINY_NET, config)
    snaps = list(fitter.run(snapshot_every=5))
    assert snaps[-1].backtracks == 1
    scores = dict(fitter.stopper.history)
    # Before this, the NaN outputs stayed in the window (and its running sums) until the
    # ring had gone round and the sums were recomputed: NaN scores, so no best, meanwhile.
    assert all(np.isfinite(scores[i]) for i in (90, 95, 100, 105, 110))
    assert 85 < snaps[-1].best_iteration


def test_es_wmv_keeps_its_window_at_a_checkpoint_and_puts_it_back():
    config = StoppingConfig(rule="wmv", window=4, warmup=0)
    rule = WindowedVariance(config, (1, 8, 8), CPU, seed=0)
    rng = np.random.default_rng(0)
    steady = [torch.as_tensor(0.5 + 0.01 * rng.standard_normal((1, 1, 8, 8)), dtype=torch.float32) for _ in range(6)]
    for i, out in enumerate(steady, start=1):
        rule.update(i, out, out)
    before = float(rule.last_score)
    kept = rule.score_state()
    blown = torch.full((1, 1, 8, 8), 1e3)
    rule.update(7, blown, blown)
    assert float(rule.last_score) > 1e3 * before
    rule.restore_score(kept)
    assert rule.last_score is None  # forgotten until the next update, as for every rule
    # The next output replaces one of the checkpoint's: the window is the steady outputs.
    rule.update(8, steady[-1], steady[-1])
    assert float(rule.last_score) < 2 * before
