from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_dip.errors import InputError
from napari_dip.engine.fit import FitConfig, Fitter, estimate_memory_bytes, fit
from napari_dip.engine.forward import Identity, KnownPixels, LanczosDownsampler
from napari_dip.engine.networks import PAPER
from napari_dip.engine.stopping import StoppingConfig
from tiny import TINY_NET, CountingModel, smooth_image

CPU = FitConfig(iterations=40, device="cpu", learning_rate=0.01)


def observation(size=32, channels=1, seed=0):
    return np.moveaxis(smooth_image(size, channels, seed), -1, 0)


def test_loss_decreases_and_snapshots_arrive_at_the_interval():
    snaps = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=60), snapshot_every=20))
    assert [s.iteration for s in snaps] == [20, 40, 60]
    assert snaps[-1].loss < 0.5 * snaps[0].loss
    assert snaps[-1].done and snaps[-1].stop_reason == "budget"
    assert not snaps[0].done and snaps[0].stop_reason is None
    assert snaps[-1].output.shape == (1, 32, 32) and snaps[-1].output.dtype == np.float32
    assert snaps[-1].settings["fit"]["seed"] == 0 and snaps[-1].settings["device"] == "cpu"


def test_settings_name_the_kernels_whose_rounding_the_result_depends_on():
    # The same seed and threads repeat a fit on the same machine, not always on another:
    # the record says which kernels ran it.
    snaps = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=3), snapshot_every=3))
    assert snaps[-1].settings["kernels"].startswith("cpu " + torch.backends.cpu.get_cpu_capability())


def test_final_snapshot_at_the_end_even_off_the_interval():
    snaps = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=25), snapshot_every=10))
    assert [s.iteration for s in snaps] == [10, 20, 25]


def test_average_is_the_exponential_average_of_outputs_corrected_for_its_start():
    weight = 0.9
    fitter = Fitter(observation(), Identity(), TINY_NET, replace(CPU, iterations=12, average_weight=weight))
    outputs = []
    for snap in fitter.run(snapshot_every=1):
        outputs.append(snap.output)
        # Output k of t weighs weight ** (t - k), over the sum of the weights: the first
        # (a random network's) fades as fast as any other, not as the whole start did.
        weights = weight ** np.arange(len(outputs) - 1, -1, -1)
        expected = np.tensordot(weights / weights.sum(), np.stack(outputs), axes=1)
        np.testing.assert_allclose(snap.average, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[-1], expected)  # the average is not just the last output
    uncorrected = outputs[0]
    for output in outputs[1:]:
        uncorrected = weight * uncorrected + (1 - weight) * output
    assert not np.allclose(uncorrected, expected, atol=1e-4)  # and not the plain recurrence from the first


def test_same_seed_same_result_on_cpu_and_different_seed_differs():
    def run(seed):
        return list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=15, seed=seed), 15))[-1].average

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_seed_none_draws_and_records_a_seed():
    fitter = Fitter(observation(), Identity(), TINY_NET, replace(CPU, iterations=2, seed=None))
    assert isinstance(fitter.seed, int)
    assert list(fitter.run(2))[-1].settings["fit"]["seed"] == fitter.seed


def test_caller_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=2), 2))
    assert torch.equal(torch.rand(3), expected)


def test_cancel_by_closing_the_generator_stops_the_fit():
    model = CountingModel()
    run = fit(observation(), model, TINY_NET, replace(CPU, iterations=1000), snapshot_every=5)
    next(run)
    next(run)
    run.close()
    assert model.calls == 10
    with pytest.raises(StopIteration):
        next(run)


def _state(fitter):
    params = [p.detach().clone() for p in fitter.network.parameters()]
    moments = [fitter.optimizer.state[p]["exp_avg"].clone() for p in fitter.network.parameters()]
    steps = [float(fitter.optimizer.state[p]["step"]) for p in fitter.network.parameters()]
    return params, moments, steps


def test_cpu_fits_take_fused_adam_steps_equal_to_per_tensor_adam(monkeypatch):
    # The fused kernel is a speed-up only: the same Adam, to float rounding. Compared on the
    # outputs, not the weights: a convolution's bias before a batch norm has a gradient of
    # pure rounding noise, which Adam turns into steps of either sign whatever the kernel.
    fused = Fitter(observation(), Identity(), TINY_NET, replace(CPU, iterations=30, seed=3))
    assert fused.optimizer.defaults["fused"] is True
    fused_snaps = list(fused.run(snapshot_every=10))

    per_tensor_adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam",
                        lambda params, lr, betas, capturable, fused: per_tensor_adam(params, lr=lr, betas=betas))
    plain = Fitter(observation(), Identity(), TINY_NET, replace(CPU, iterations=30, seed=3))
    assert not plain.optimizer.defaults["fused"]
    plain_snaps = list(plain.run(snapshot_every=10))
    assert [s.iteration for s in fused_snaps] == [s.iteration for s in plain_snaps] == [10, 20, 30]
    for a, b in zip(fused_snaps, plain_snaps):
        np.testing.assert_allclose(a.output, b.output, atol=1e-5)
        np.testing.assert_allclose(a.average, b.average, atol=1e-5)
        assert a.loss == pytest.approx(b.loss, rel=1e-4)


def test_backtracking_restores_weights_and_optimizer_state_after_a_divergence():
    # The loss becomes NaN at step 37; the check at 40 must bring back the state saved at
    # the check at 30 (network weights, Adam moments and step count), then go on.
    model = CountingModel(poison_at=37)
    fitter = Fitter(observation(), model, TINY_NET, replace(CPU, iterations=60, check_every=10))
    saved = {}
    snaps = []
    for snap in fitter.run(snapshot_every=10):
        snaps.append(snap)
        if snap.iteration in (30, 40):
            saved[snap.iteration] = _state(fitter)
    params30, moments30, steps30 = saved[30]
    params40, moments40, steps40 = saved[40]
    for a, b in zip(params30, params40):
        assert torch.equal(a, b)
    for a, b in zip(moments30, moments40):
        assert torch.equal(a, b)
    assert steps30 == steps40 == [30.0] * len(steps30)
    assert snaps[3].backtracks == 1 and snaps[3].loss == snaps[2].loss
    assert fitter.optimizer.param_groups[0]["lr"] == CPU.learning_rate / 2  # smaller steps after a blow-up
    final = snaps[-1]
    assert np.isfinite(final.average).all() and np.isfinite(final.loss)
    assert all(torch.isfinite(p).all() for p in fitter.network.parameters())


def test_a_loss_jump_triggers_backtracking():
    fitter = Fitter(observation(), Identity(), TINY_NET, CPU)
    assert fitter._jumped(np.array([0.1, 0.09, 0.5]), 0.11)
    assert fitter._jumped(np.array([0.5]), 0.1)  # relative to the lowest accepted loss
    assert fitter._jumped(np.array([0.1, 0.09, 0.5]), np.inf)  # before any: the block's own minimum
    assert not fitter._jumped(np.array([0.1, 0.09, 0.2]), 0.11)
    assert fitter._jumped(np.array([0.1, np.inf]), 0.11)
    # tiny losses near convergence on noise-free data fluctuate by large ratios: no jump
    assert not fitter._jumped(np.array([2e-5, 9e-5, 1e-5]), 3e-5)
    # a smooth blow-up, each step well under 3x the previous, is still a jump from the lowest
    assert fitter._jumped(np.array([4e-5, 2e-4, 8e-4, 2e-3, 5e-3]), 4e-5)


class SpikyCheckpointModel(CountingModel):
    """The loss spikes at one step, and again at the first step after every restore: as
    when the checkpoint was saved after a step whose update began a spike, so that the
    restored state's own loss is far above the lowest one."""

    def __init__(self, spike_at):
        super().__init__()
        self.spike_at = spike_at
        self.restored = False

    def forward(self, x):
        self.calls += 1
        spike = self.calls == self.spike_at or self.restored
        self.restored = False
        return x + 1.0 if spike else x


def test_a_restored_state_whose_own_loss_is_high_is_not_backtracked_from_again(monkeypatch):
    # Measured from the lowest loss before the restore, the restored state's first loss was
    # a jump at every check however small the step: 21 backtracks in a row, and the fit
    # was lost (an inpainting fit of Set12/07). After a restore, jumps are measured from
    # the restored state's own losses.
    model = SpikyCheckpointModel(spike_at=36)
    fitter = Fitter(observation(), model, TINY_NET, replace(CPU, iterations=80, check_every=10))
    restore = fitter._restore

    def restore_and_spike(checkpoint):
        model.restored = True
        return restore(checkpoint)

    monkeypatch.setattr(fitter, "_restore", restore_and_spike)
    snaps = list(fitter.run(snapshot_every=10))
    assert snaps[-1].done and snaps[-1].iteration == 80
    assert snaps[-1].backtracks == 1
    assert fitter.optimizer.param_groups[0]["lr"] == CPU.learning_rate / 2
    assert np.isfinite(snaps[-1].average).all()


def test_a_finite_blow_up_after_a_restore_is_backtracked_from_again():
    # The reset must not hide a real second blow-up: NaN at 36, then the loss climbing by
    # finite steps over 55-64 (well over 3x the floor), which the check of 60 must catch.
    class NaNThenClimb(CountingModel):
        def forward(self, x):
            self.calls += 1
            if self.calls == 36:
                return x * float("nan")
            return x + 0.05 * (self.calls - 54) if 55 <= self.calls <= 64 else x

    fitter = Fitter(observation(), NaNThenClimb(), TINY_NET, replace(CPU, iterations=80, check_every=10))
    snaps = list(fitter.run(snapshot_every=10))
    assert [s.backtracks for s in snaps] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert fitter.optimizer.param_groups[0]["lr"] == CPU.learning_rate / 4
    assert np.isfinite(snaps[-1].average).all()


def test_a_restored_state_that_stays_high_does_not_become_the_state_to_come_back_to(monkeypatch):
    # After the restore at 40 the loss stays high for a whole block (41-50): accepted, as
    # the jumps are measured from the restored state, but not healthy against the fit's
    # lowest loss, so the blow-up at 56 goes back to the checkpoint of 30 again.
    class HighAfterRestore(CountingModel):
        high_until = 0

        def forward(self, x):
            self.calls += 1
            if self.calls in (36, 56):
                return x * float("nan")
            return x + 1.0 if self.calls <= self.high_until else x

    model = HighAfterRestore()
    fitter = Fitter(observation(), model, TINY_NET, replace(CPU, iterations=80, check_every=10))
    restore, restored_from = fitter._restore, []

    def spy(checkpoint):
        restored_from.append(checkpoint)
        model.high_until = model.calls + 10
        return restore(checkpoint)

    monkeypatch.setattr(fitter, "_restore", spy)
    snaps = list(fitter.run(snapshot_every=10))
    assert snaps[-1].backtracks == 2 and snaps[-1].iteration == 80
    assert len(restored_from) == 2 and restored_from[0] is restored_from[1]


def test_without_backtracking_a_divergence_is_an_error():
    model = CountingModel(poison_at=3)
    run = fit(observation(), model, TINY_NET, replace(CPU, iterations=20, backtrack=False, check_every=5), 5)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        list(run)


def test_super_resolution_fits_the_high_resolution_image():
    low = observation(16)
    snaps = list(fit(low, LanczosDownsampler(2, 1), TINY_NET, replace(CPU, iterations=30), 30))
    assert snaps[-1].average.shape == (1, 32, 32)


def test_inpainting_keeps_holes_out_of_the_loss():
    obs = observation(32)
    known = np.ones_like(obs)
    known[:, 10:20, 10:20] = 0
    corrupted = obs.copy()
    corrupted[:, 10:20, 10:20] = 100.0  # garbage in the holes must not matter
    a = list(fit(corrupted, KnownPixels(known), TINY_NET, replace(CPU, iterations=10), 10))[-1]
    b = list(fit(obs, KnownPixels(known), TINY_NET, replace(CPU, iterations=10), 10))[-1]
    np.testing.assert_array_equal(a.average, b.average)


def test_mixed_precision_runs_on_cpu():
    snaps = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=10, precision="bfloat16"), 10))
    assert np.isfinite(snaps[-1].average).all()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"iterations": 0}, "iterations"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"average_weight": 1.0}, "average_weight"),
        ({"precision": "int8"}, "precision"),
        ({"device": "cuda:7"}, "cuda"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_settings_are_explained(options, message):
    with pytest.raises(InputError, match=message):
        Fitter(observation(), Identity(), TINY_NET, replace(CPU, **options))


def test_images_too_large_for_the_device_are_refused_before_allocating():
    huge = np.zeros((3, 16, 16), np.float32)
    # 16 px observed, upscaled 8x -> 128 px; ask for a paper network on a pretend 32k image
    needed = estimate_memory_bytes(PAPER, 3, 32768, 32768)
    assert needed > 1e12
    with pytest.raises(MemoryError, match="GiB"):
        Fitter(huge, _HugeModel(), PAPER, CPU)


class _HugeModel(Identity):
    def image_size(self, observed_size):
        return 32768, 32768


def test_memory_estimate_grows_with_pixels_and_channels():
    small = estimate_memory_bytes(PAPER, 1, 256, 256)
    assert estimate_memory_bytes(PAPER, 1, 512, 512) > 3 * small
    assert estimate_memory_bytes(PAPER.with_width(48), 1, 256, 256) < small


def test_several_runs_average_independent_fits():
    # Without input jitter, run k of a batched fit starts as the single fit with seed + k
    # and follows it (Adam's steps do not depend on the 1/runs scale of the loss, up to its
    # epsilon). Not to the bit: Adam's first steps are about the sign of each gradient, so
    # rounding differences between the grouped and the single convolutions grow (0.01 in
    # an output after 6 steps of this network); far less than the runs differ.
    config = replace(CPU, iterations=20, reg_noise_std=0.0, backtrack=False,
                     stopping=StoppingConfig(rule="none"))
    single = [list(fit(observation(), Identity(), TINY_NET, replace(config, seed=s), 1)) for s in (5, 6)]
    both = list(fit(observation(), Identity(), TINY_NET, replace(config, seed=5, runs=2), 1))
    assert both[-1].settings["fit"]["runs"] == 2
    runs = both[-1].run_averages  # (runs, C, H, W): each run's own average
    # The same start, to the rounding of grouped against single convolutions.
    np.testing.assert_allclose(both[0].average, (single[0][0].average + single[1][0].average) / 2, atol=1e-5)
    for k in (0, 1):
        own = np.abs(runs[k] - single[k][-1].average).max()
        other = np.abs(runs[k] - single[1 - k][-1].average).max()
        assert own < 0.25 * other, (k, own, other)
    expected = (single[0][-1].average + single[1][-1].average) / 2
    assert np.abs(both[-1].average - expected).max() < 0.25 * np.abs(single[0][-1].average - single[1][-1].average).max()


def test_snapshots_do_not_change_after_they_are_yielded():
    snaps = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=10), snapshot_every=5))
    assert not np.array_equal(snaps[0].average, snaps[1].average)
    assert not np.array_equal(snaps[0].output, snaps[1].output)


def test_snapshots_by_time_as_well_as_by_count():
    config = replace(CPU, iterations=6)
    by_count = list(fit(observation(), Identity(), TINY_NET, config, snapshot_every=1000))
    assert [s.iteration for s in by_count] == [6]
    # Any positive interval has passed after one step: one snapshot per iteration.
    by_time = list(fit(observation(), Identity(), TINY_NET, config, snapshot_every=1000, snapshot_seconds=1e-9))
    assert [s.iteration for s in by_time] == [1, 2, 3, 4, 5, 6]
    # A long interval adds nothing to the count-based snapshots.
    slow = list(fit(observation(), Identity(), TINY_NET, config, snapshot_every=2, snapshot_seconds=3600))
    assert [s.iteration for s in slow] == [2, 4, 6]
    with pytest.raises(InputError):
        list(fit(observation(), Identity(), TINY_NET, config, snapshot_seconds=0))


def test_the_first_snapshot_by_time_counts_from_the_callers_start():
    import time

    config = replace(CPU, iterations=6)
    # The caller asked an hour ago: the first step is long past the interval, the others not.
    asked_long_ago = time.perf_counter() - 3600
    fitter = Fitter(observation(), Identity(), TINY_NET, config)
    snaps = list(fitter.run(snapshot_every=1000, snapshot_seconds=600, since=asked_long_ago))
    assert [s.iteration for s in snaps] == [1, 6]
    assert snaps[0].elapsed < 600  # elapsed still counts from the fit's own start
    # Without it the same interval gives only the last snapshot.
    fitter = Fitter(observation(), Identity(), TINY_NET, config)
    assert [s.iteration for s in fitter.run(snapshot_every=1000, snapshot_seconds=600)] == [6]


def test_expected_stop_is_best_plus_patience_within_the_budget():
    stopping = StoppingConfig(rule="validation", patience=7, warmup=0)
    fitter = Fitter(observation(), Identity(), TINY_NET, replace(CPU, iterations=60, stopping=stopping))
    snaps = list(fitter.run(snapshot_every=1))
    for snap in snaps[:-1]:  # the rule is asked every check_every (25) iterations: the first check after
        after_patience = -(-(snap.best_iteration + 7) // 25) * 25
        assert snap.expected_stop == min(60, max(snap.iteration, after_patience))
    assert snaps[-1].expected_stop == snaps[-1].iteration
    # Without a rule the fit runs its budget, and that is what it expects.
    plain = list(fit(observation(), Identity(), TINY_NET, replace(CPU, iterations=4, stopping=StoppingConfig(rule="none")), 2))
    assert [s.expected_stop for s in plain] == [4, 4]


def test_expected_stop_projects_the_held_out_score_the_rule_kept_at_its_checks(monkeypatch):
    from napari_dip.engine import fit as fit_module
    from napari_dip.engine.stopping import expected_stop

    asked = []

    def spy(config, iteration, best, budget, check_every, history=None, noise=None):
        asked.append((iteration, list(history or []), noise))
        return expected_stop(config, iteration, best, budget, check_every, history, noise)

    monkeypatch.setattr(fit_module, "expected_stop", spy)
    noisy = (observation() + np.random.default_rng(0).normal(0, 0.1, (1, 32, 32))).astype(np.float32)
    stopping = StoppingConfig(rule="validation", patience=40, warmup=10, rise=0.002, smoothing=0.9)
    config = replace(CPU, iterations=80, check_every=5, stopping=stopping)
    fitter = Fitter(noisy, Identity(), TINY_NET, config)
    snaps = list(fitter.run(snapshot_every=5))
    # The rule scores from the first check on, warm-up included...
    assert [i for i, _ in fitter.stopper.history][:3] == [5, 10, 15]
    # ...and each snapshot's estimate is asked with the history up to it and the rule's noise.
    assert asked and all(noise == fitter.stopper.score_noise() > 0 for _, _, noise in asked)
    for iteration, history, _ in asked:
        assert history == [h for h in fitter.stopper.history if h[0] <= iteration]
    assert all(s.iteration <= s.expected_stop <= 80 for s in snaps)


def test_a_blow_up_before_the_first_check_is_never_shown():
    # NaN at step 3. The snapshot of step 5 comes between checks: it shows the checkpoint
    # taken after step 1 (the initial state had no output), and the check of step 10
    # backtracks to it.
    model = CountingModel(poison_at=3)
    snaps = list(fit(observation(), model, TINY_NET, replace(CPU, iterations=10, check_every=10), snapshot_every=5))
    assert [s.iteration for s in snaps] == [5, 10]
    assert [s.backtracks for s in snaps] == [0, 1]
    for snap in snaps:
        assert np.isfinite(snap.loss)
        assert snap.output.shape == (1, 32, 32) and np.isfinite(snap.output).all() and np.isfinite(snap.average).all()


def test_snapshots_do_not_change_where_a_fit_stops_or_what_it_returns():
    """Snapshots by time come at iterations that depend on the machine's speed; the checks
    (stopping, divergence) run on their own grid, so a snapshot after every step, as a slow
    machine gives, stops at the same iteration with the same result as none at all."""
    noisy = (observation() + np.random.default_rng(0).normal(0, 0.1, (1, 32, 32))).astype(np.float32)
    stopping = StoppingConfig(rule="validation", patience=10, warmup=0)
    config = replace(CPU, iterations=400, check_every=5, stopping=stopping)
    quiet = list(fit(noisy, Identity(), TINY_NET, config, snapshot_every=1000))
    every_step = list(fit(noisy, Identity(), TINY_NET, config, snapshot_every=1000, snapshot_seconds=1e-9))
    assert quiet[-1].stop_reason == "validation" and quiet[-1].iteration < 400
    assert len(every_step) == every_step[-1].iteration  # one per step
    assert all(s.iteration % 5 == 0 for s in [quiet[-1], every_step[-1]])
    assert every_step[-1].iteration == quiet[-1].iteration
    assert every_step[-1].best_iteration == quiet[-1].best_iteration
    np.testing.assert_array_equal(every_step[-1].average, quiet[-1].average)


def test_warm_start_carries_weights_and_input_to_the_next_fit():
    from napari_dip.engine.fit import FitState

    first = Fitter(observation(seed=0), Identity(), TINY_NET, replace(CPU, iterations=20))
    list(first.run(20))
    state = first.export_state()
    assert isinstance(state, FitState)
    second = Fitter(observation(seed=1), Identity(), TINY_NET, replace(CPU, iterations=5, seed=9), initial_state=state)
    for name, value in second.network.state_dict().items():
        assert torch.equal(value, state.network[name]), name
    assert torch.equal(second.input, state.input)
    # A fresh fit with the same seed would start elsewhere: the warm start is not a no-op.
    cold = Fitter(observation(seed=1), Identity(), TINY_NET, replace(CPU, iterations=5, seed=9))
    assert not torch.equal(cold.input, second.input)
    # Changing the state afterwards does not reach back into the first fit.
    state.input.zero_()
    assert not torch.equal(first.input.cpu(), state.input)
    with pytest.raises(InputError, match="planes of one size"):
        Fitter(observation(size=48), Identity(), TINY_NET, replace(CPU, iterations=2), initial_state=first.export_state())
