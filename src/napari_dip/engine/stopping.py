"""Deciding when to stop a fit without ground truth.

DIP first reproduces the image's structure and later its noise, so the quality of its
output rises, peaks and decays. A stopping rule watches the fit, keeps the result from the
best iteration it has seen and says when to stop:

* :class:`WindowedVariance` (ES-WMV, Wang et al., "Early Stopping for Deep Image Prior"):
  the variance of the last ``window`` outputs, averaged over pixels, falls while the network
  converges on the image and rises again once it chases noise. Its minimum marks the peak.
* :class:`HeldOutPixels`: a random fraction of the observed pixels is left out of the loss;
  the error of the averaged output on them against the observation is an unbiased estimate
  of its error against the truth plus the noise variance, so it rises exactly when quality
  falls. That needs noise independent from pixel to pixel: where neighbours' noise is
  correlated (wide-field cameras; :func:`neighbour_noise_correlation`), a network that
  fits the neighbours' noise predicts the held-out pixel's too, and the error keeps
  falling while quality falls. There the 7 x 7 block around each held-out pixel is left
  out of the loss (``holdout_block``), so the nearest fitted pixel is four pixels away,
  where the correlation has died down. A fit by recorruption sees the held-out pixels in
  its input, so there each step's own output is scored against that step's recorrupted
  target instead: their noise is independent (:meth:`HeldOutPixels.update`).

Rules are updated every iteration entirely on the device (no host copy) and asked whether
to stop only at the fit loop's periodic checks, where the loop synchronises anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError

RULES = ("wmv", "validation", "none")


@dataclass(frozen=True)
class StoppingConfig:
    """Which rule to use and its settings; ``rule="none"`` runs the whole budget."""

    rule: str = "wmv"
    #: Iterations without a new best before the fit stops.
    patience: int = 1000
    #: Iterations before which no best is recorded (early outputs are flat or erratic).
    warmup: int = 200
    #: ES-WMV: number of recent outputs whose variance is measured.
    window: int = 100
    #: ES-WMV: at most this many values per output enter the variance (a fixed random
    #: subset of pixels for large images keeps memory and time small).
    max_samples: int = 16384
    #: Held-out validation: fraction of observed pixels left out of the loss.
    holdout_fraction: float = 0.05
    #: Held-out validation: weight of the exponential smoothing of the validation error.
    smoothing: float = 0.9
    #: Held-out validation: side of the square of pixels around each held-out pixel that is
    #: left out of the loss (1: the pixel alone; 5: its 24 neighbours too, for noise
    #: correlated between neighbours). ``None`` picks :data:`CORRELATED_NOISE_BLOCK` where
    #: the observation's noise is correlated (:data:`CORRELATED_NOISE`), else 1. With a
    #: block, the held-out pixels are ``holdout_fraction / holdout_block`` of the image
    #: (0.7 % for 7 x 7 blocks, which leave about 30 % of the pixels out of the loss).
    holdout_block: int | None = None
    #: Trend test: stop as soon as the score has risen this much (relative) above its best,
    #: at least ``min_wait`` iterations after it, without waiting out the patience; ``None``
    #: waits for the patience alone. A smooth score that has clearly turned up will not
    #: come back down below its best (benchmarks/stopping.py --from-traces).
    rise: float | None = None
    min_wait: int = 25

    def __post_init__(self):
        if self.rule not in RULES:
            raise InputError(f"stopping rule must be one of {RULES}, got {self.rule!r}")
        if self.patience < 1 or self.window < 2 or self.warmup < 0 or self.max_samples < 1:
            raise InputError("patience and max_samples must be >= 1, window >= 2 and warmup >= 0")
        if not 0 < self.holdout_fraction < 0.5:
            raise InputError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.holdout_block is not None and (self.holdout_block < 1 or self.holdout_block % 2 == 0):
            raise InputError(f"holdout_block must be an odd number >= 1 (or None), got {self.holdout_block}")
        if not 0 <= self.smoothing < 1:
            raise InputError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.rise is not None and not self.rise > 0:
            raise InputError(f"rise must be positive (or None), got {self.rise}")
        if self.min_wait < 0:
            raise InputError(f"min_wait must be >= 0, got {self.min_wait}")


class _BestTracker:
    """Keeps, on the device, the smallest score seen and the average from that iteration."""

    def __init__(self, config: StoppingConfig, device: torch.device):
        self.config = config
        self.best_score = torch.full((), float("inf"), device=device)
        self.best_step = torch.zeros((), dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.best_average: torch.Tensor | None = None
        self.best_output: torch.Tensor | None = None
        #: The latest score (a device scalar), for studies of the rule; ``None`` until scored.
        self.last_score: torch.Tensor | None = None
        #: ``(iteration, score)`` at each check the rule was asked at, on the host, warm-up
        #: included where the rule scores from the start: what :func:`expected_stop` projects.
        self.history: list[tuple[int, float]] = []

    def _record(self, score: torch.Tensor, iteration: int, output: torch.Tensor, average: torch.Tensor) -> None:
        if self.best_average is None:
            self.best_average = average.clone()
            self.best_output = output.clone()
        if iteration < self.config.warmup:
            return
        self.last_score = score
        better = score < self.best_score  # a NaN score is never better
        self.best_score = torch.where(better, score, self.best_score)
        self.best_step = torch.where(better, self.step, self.best_step)
        # In place: no image-sized temporary on every iteration.
        torch.where(better, average, self.best_average, out=self.best_average)
        torch.where(better, output, self.best_output, out=self.best_output)

    def best_iteration(self) -> int | None:
        """Iteration of the best score so far (host sync), or ``None`` before any."""
        if not torch.isfinite(self.best_score):
            return None
        return int(self.best_step)

    def _current_score(self) -> torch.Tensor | None:
        """The score as it stands (``None`` where the rule has none yet): here the last one
        recorded, after the warm-up; :class:`HeldOutPixels` has one from the first iteration."""
        return self.last_score

    def score_state(self) -> object:
        """What a fit's checkpoint keeps of the rule (:meth:`restore_score`): here nothing."""
        return None

    def restore_score(self, state: object) -> None:
        """After a backtrack: the running score may hold the blow-up's NaN (or its huge
        errors), which would never be beaten again. Put back what :meth:`score_state` gave
        when the checkpoint was taken; here, forget the last score. The best so far and
        its average stay."""
        self.last_score = None

    def should_stop(self, iteration: int) -> bool:
        current = self._current_score()
        if current is not None:
            # One more host read at a check, where the fit loop synchronises anyway.
            self.history.append((iteration, float(current)))
        best = self.best_iteration()
        if best is None:
            return False
        waited = iteration - best
        if waited >= self.config.patience:
            return True
        rise = self.config.rise
        if rise is None or waited < self.config.min_wait or self.last_score is None:
            return False
        return bool(self.last_score > self.best_score * (1.0 + rise))


class WindowedVariance(_BestTracker):
    """ES-WMV: mean per-pixel variance of the last ``window`` outputs.

    The variance is kept up to date with running sums over a ring buffer, so an update
    costs a few operations per sampled pixel instead of a pass over the whole window
    (about 50 times less at 16384 samples on one CPU thread: ``benchmarks/wmv_cost.py``).
    Buffer and sums are float64 where the device has it, and the sums are recomputed from
    the buffer each time the ring wraps, so rounding drift stays bounded whatever the dtype.
    """

    name = "wmv"

    def __init__(self, config: StoppingConfig, image_shape: tuple[int, ...], device: torch.device, seed: int):
        super().__init__(config, device)
        numel = 1
        for size in image_shape:
            numel *= size
        if numel > config.max_samples:
            generator = torch.Generator().manual_seed(seed + 2)
            self.indices = torch.randperm(numel, generator=generator)[: config.max_samples].to(device)
        else:
            self.indices = None
        samples = numel if self.indices is None else config.max_samples
        # The ring buffer holds the sums' dtype, so no per-step conversion is needed.
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.buffer = torch.zeros((config.window, samples), dtype=dtype, device=device)
        self.total = torch.zeros(samples, dtype=dtype, device=device)
        self.total_sq = torch.zeros(samples, dtype=dtype, device=device)

    def update(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> None:
        self.step.add_(1)
        window = self.config.window
        slot = (iteration - 1) % window
        flat = output.detach().reshape(-1)
        sample = flat if self.indices is None else flat.index_select(0, self.indices)
        row = self.buffer[slot]
        if slot == window - 1:
            # Once per turn of the ring: exact sums from the buffer, dropping rounding drift.
            row.copy_(sample)
            torch.sum(self.buffer, dim=0, out=self.total)
            torch.sum(self.buffer * self.buffer, dim=0, out=self.total_sq)
        else:
            if iteration > window:  # the oldest output leaves the window
                self.total.sub_(row)
                self.total_sq.addcmul_(row, row, value=-1)
            row.copy_(sample)
            self.total.add_(row)
            self.total_sq.addcmul_(row, row)
        if iteration < window:
            return
        # Mean over pixels of E[x^2] - E[x]^2, from two reductions of the running sums.
        samples = self.total.numel()
        variance = (self.total_sq.sum() / window - self.total.dot(self.total) / window**2) / samples
        self._record(variance.clamp_min(0).float(), iteration, output, average)

    def score_state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The window as it was: copies on the device (at most window x max_samples values,
        # 13 MB in float64, once per checkpoint), no host sync.
        return self.buffer.clone(), self.total.clone(), self.total_sq.clone()

    def restore_score(self, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> None:
        # Without this the blow-up's outputs stayed in the window for up to ``window``
        # iterations after a backtrack, and their variance kept the rule from rating any
        # iteration until they had left it. The restored rows are the outputs that led to
        # the network the fit goes back to; new outputs replace them in ring order.
        super().restore_score(None)
        if state is not None:
            for live, kept in zip((self.buffer, self.total, self.total_sq), state):
                live.copy_(kept)


#: Above this, :func:`neighbour_noise_correlation` calls an image's noise correlated. On
#: 128² centre crops of the 12 FMD ``*_1`` images it was 0.50-0.55 for the three wide-field
#: ones and 0.09-0.29 for the confocal and two-photon ones (measured 2026-11-26).
CORRELATED_NOISE = 0.4
#: The block held out around each validation pixel where the noise is correlated. On the
#: 128² crop of WideField_BPAE_B_1 (noise correlation 0.63 at lag 1, 0.23 at lag 2, 0.14 at
#: lag 3 against the 50-frame mean) single pixels' validation error fell for all 900
#: iterations while PSNR peaked at 33.66 dB (iteration 389); with 3 x 3 blocks it turned at
#: 494 (33.0 dB, oracle 33.64); with 5 x 5 blocks at 419 (34.2 dB, oracle 34.24). On the
#: 256² crop of WideField_BPAE_R_1 (correlation 0.13 at lag 3 and 0.11 at lag 4 along
#: rows) 5 x 5 blocks were not enough: their error fell for all 1600 iterations while PSNR
#: peaked at 36.40 dB (iteration 510) and the default stop returned 33.29 dB; with 7 x 7
#: blocks it turned at 512 (36.48 dB, oracle 36.52); 9 x 9 blocks also turned but the
#: fit's peak fell to 36.11 dB (fewer pixels in the loss). Measured 2026-11-26.
CORRELATED_NOISE_BLOCK = 7


def neighbour_noise_correlation(observation: torch.Tensor) -> float:
    """How strongly the noise of neighbouring pixels is correlated, from the image alone.

    The residual of a 5 x 5 box filter holds the noise and some structure. Its correlation
    between horizontal and vertical neighbours (lag 1) minus that at lag 2: structure
    leaks into both about equally, noise that is white into neither, and noise correlated
    over a pixel or two (a camera's demosaicing or binning, a wide-field microscope's
    resampling) into lag 1 only. ``observation`` is ``(N, C, *spatial)``; the last two axes
    are the image plane.
    """
    planes = observation.detach().float().reshape(-1, 1, *observation.shape[-2:]).cpu()
    if min(planes.shape[-2:]) < 8:
        return 0.0
    smooth = torch.nn.functional.avg_pool2d(planes, 5, stride=1, padding=2, count_include_pad=False)
    residual = planes - smooth
    residual = residual - residual.mean(dim=(-2, -1), keepdim=True)
    variance = float((residual**2).mean())
    if not variance > 0:
        return 0.0

    def at_lag(k: int) -> float:
        across = (residual[..., :, k:] * residual[..., :, :-k]).mean()
        down = (residual[..., k:, :] * residual[..., :-k, :]).mean()
        return float(across + down) / 2 / variance

    return at_lag(1) - at_lag(2)


class HeldOutPixels(_BestTracker):
    """Validation error of the averaged output on observed pixels left out of the loss."""

    name = "validation"

    def __init__(
        self, config: StoppingConfig, observation: torch.Tensor, weight: torch.Tensor | None, seed: int,
        pixel_error=None,
    ):
        super().__init__(config, observation.device)
        #: Per-pixel error of a prediction (the fit's loss, e.g. weighted by the noise
        #: model's variance); the squared error by default.
        self.pixel_error = pixel_error or (lambda predicted, observed: (predicted - observed) ** 2)
        #: The noise's neighbour correlation (``None`` when the block was given) and the
        #: block of pixels left out around each held-out pixel.
        self.noise_correlation = None
        block = config.holdout_block
        if block is None:
            self.noise_correlation = neighbour_noise_correlation(observation)
            block = CORRELATED_NOISE_BLOCK if self.noise_correlation > CORRELATED_NOISE else 1
        self.block = block
        generator = torch.Generator().manual_seed(seed + 3)
        # One draw per pixel (or voxel) shared by the channels: all axes after (N, C).
        draw = torch.rand(observation.shape[2:], generator=generator).to(observation.device)
        centres = (draw < config.holdout_fraction / block).to(observation.dtype)
        observed = torch.ones_like(observation) if weight is None else weight.expand_as(observation)
        self.held = centres.expand_as(observation) * observed
        if float(self.held.sum()) == 0:
            raise InputError("too few observed pixels to hold some out for validation; use the 'wmv' rule")
        left_out = self.held
        if block > 1:
            # The block around each held-out pixel, in the image plane (the last two axes).
            flat = centres.reshape(-1, 1, *centres.shape[-2:])
            grown = torch.nn.functional.max_pool2d(flat, block, stride=1, padding=block // 2)
            left_out = grown.reshape(centres.shape).expand_as(observation) * observed
        #: Multiplies the loss: 1 on pixels the fit may use, 0 on held-out ones.
        self.train_weight = observed - left_out
        self.held_count = self.held.sum()
        self.observation = observation
        self.smoothed = torch.zeros((), device=observation.device)
        self._scored = False  # whether ``smoothed`` holds a score yet

    def update(
        self, iteration: int, output: torch.Tensor, average: torch.Tensor, predicted: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> None:
        """``predicted`` is the forward model applied to ``average``, scored against the
        observation; or, for a fit by recorruption, this step's output, scored against this
        step's ``target`` (the image less the fresh noise over alpha). That score is noisier
        than the average's (fresh noise every step): the presets smooth it more
        (:data:`napari_dip.engine.presets.RECORRUPTION_STOPPING`)."""
        self.step.add_(1)
        observed = self.observation if target is None else target
        error = (self.pixel_error(predicted, observed) * self.held).sum() / self.held_count
        if self._scored:
            weight = self.config.smoothing
            self.smoothed.mul_(weight).add_(error, alpha=1.0 - weight)
        else:
            # Afresh at the first update, and after a backtrack to before any score
            # (restore_score): a copy, since a NaN left by a blow-up times zero is still NaN.
            self.smoothed.copy_(error)
            self._scored = True
        self._record(self.smoothed, iteration, output, average)

    def _current_score(self) -> torch.Tensor | None:
        # Smoothed from the first iteration on, so the projection can start before the warm-up ends.
        return self.smoothed if self._scored else None

    def score_state(self) -> torch.Tensor | None:
        # A copy on the device (no host sync), or None before the first score.
        return self.smoothed.clone() if self._scored else None

    def restore_score(self, state: torch.Tensor | None) -> None:
        # The smoothed score as it was at the checkpoint the fit goes back to; afresh if
        # there was none yet.
        if state is None:
            super().restore_score(None)
            self._scored = False
        else:
            self.smoothed.copy_(state)
            self._scored = True

    def score_noise(self) -> float:
        """How much the score varies from one step to the next, relative to itself, for
        :func:`expected_stop`. For a fit by recorruption, whose target has fresh noise at
        every step, it is the spread of a mean of squared Gaussian errors over the held-out
        values, sqrt(2 / count), taken down by the exponential smoothing's
        sqrt((1 - w) / (1 + w)). Fitted the paper's way the target is fixed and the score
        varies less; there the same value is only a scale, which put the estimate within
        a median 8-21 % of three recorded stops (BENCHMARKS.md "Estimating the automatic stop")."""
        smoothing = self.config.smoothing
        return float((2.0 / max(float(self.held_count), 1.0)) ** 0.5 * ((1 - smoothing) / (1 + smoothing)) ** 0.5)


#: How many of the score's recent falls (from one check to the next, so one more check)
#: :func:`expected_stop` fits: enough to average the score's noise, few enough to follow its bend.
PROJECTION_CHECKS = 8


def patience_stop(config: StoppingConfig, iteration: int, best: int | None, budget: int, check_every: int) -> int:
    """Where the patience runs out if no new best comes: the first check at or after
    ``best + patience`` (before any best, ``warmup + patience``), within the budget. A
    trend test (``rise``) can end a fit sooner, once its score has turned up.

    >>> patience_stop(StoppingConfig(rule="validation", patience=100), 430, 400, 3000, 25)
    500
    >>> patience_stop(StoppingConfig(rule="validation", patience=100), 50, None, 3000, 25)
    300
    """
    anchor = best if best is not None else max(iteration, config.warmup)
    at_check = -(-(anchor + config.patience) // check_every) * check_every
    return int(min(budget, max(iteration, at_check)))


def expected_stop(config: StoppingConfig, iteration: int, best: int | None, budget: int, check_every: int,
                  history: list[tuple[int, float]] | None = None, noise: float | None = None) -> int:
    """The iteration a fit is expected to stop at, for progress bars and ETAs.

    At least :func:`patience_stop`, which is all a fit can say while its score keeps
    falling (each check a new best). Where the rule's recent scores (``history``,
    ``(iteration, score)`` pairs at the checks) and the score's relative noise (``noise``,
    :meth:`HeldOutPixels.score_noise`) are known, the score's fall is also projected
    forward: its fall per iteration over the last :data:`PROJECTION_CHECKS` checks is taken
    to shrink exponentially, as it did on recorded fits, until the trend falls by less than
    the score's own noise over a patience. A score falling less than that no longer makes
    new bests for sure, and the rule stops about two ``min_wait`` later (the trend test's
    wait; a patience later without one). A projection that does not hold (a score not
    falling, or not falling ever more slowly) leaves the patience stop. On 27 recorded
    default fits at 128² and 256² this put the estimate within a median 8-14 % of the
    actual stop from a quarter of the way on, where the patience stop was 12-65 % short
    (``benchmarks/stop_estimate.py``, BENCHMARKS.md "Estimating the automatic stop").

    >>> rule = StoppingConfig(rule="validation", patience=100, rise=0.002, warmup=200)
    >>> falling = [(i, 1.0 + 0.5 * 0.995 ** i) for i in range(200, 425, 25)]
    >>> patience_stop(rule, 400, 400, 3000, 25), expected_stop(rule, 400, 400, 3000, 25, falling, noise=0.003)
    (500, 925)
    """
    at_patience = patience_stop(config, iteration, best, budget, check_every)
    if not history or not noise or noise <= 0:
        return at_patience
    recent = history[-(PROJECTION_CHECKS + 1):]
    if len(recent) < 4:
        return at_patience
    slopes = []
    for (t0, s0), (t1, s1) in zip(recent, recent[1:]):
        fall = (s0 - s1) / (t1 - t0)
        if fall > 0 and math.isfinite(fall):
            slopes.append(((t0 + t1) / 2, math.log(fall)))
    if len(slopes) < 3:
        return at_patience  # the score has levelled off (or is noise): the stop is near
    # Least squares of log(fall) against the iteration: fall = exp(a + k * t).
    mean_t = sum(t for t, _ in slopes) / len(slopes)
    mean_y = sum(y for _, y in slopes) / len(slopes)
    spread = sum((t - mean_t) ** 2 for t, _ in slopes)
    k = sum((t - mean_t) * (y - mean_y) for t, y in slopes) / spread if spread > 0 else 0.0
    if not k * (slopes[-1][0] - slopes[0][0]) < -0.05:
        return at_patience  # not slowing down (by 5 % over the span fitted): no level to project to
    now, score = recent[-1]
    if not (math.isfinite(score) and score > 0):
        return at_patience  # a score lost to a blow-up (the rule is put back after a backtrack)
    fall_now = math.exp(mean_y + k * (now - mean_t))
    level = noise * score / config.patience
    ahead = 0.0 if fall_now <= level else math.log(level / fall_now) / k
    if not math.isfinite(ahead):
        return at_patience
    lag = min(config.patience, 2 * config.min_wait) if config.rise is not None else config.patience
    projected = -(-int(math.ceil(now + ahead + lag)) // check_every) * check_every
    return int(min(budget, max(at_patience, projected)))
