"""Data-fit losses: how far the forward model's prediction is from the observation.

The fit minimises ``loss(A(f(z)), y)``; a loss is a small ``torch.nn.Module`` that gives
the per-pixel error (:meth:`pixel_error`) and the mean the optimiser sees. The same
per-pixel error scores the held-out pixels of the validation stopping rule, so a rule
always measures the error the model believes in.

* :class:`SquaredError`: additive Gaussian noise of one variance everywhere (the paper's
  loss).
* :class:`PoissonGaussianError`: noise whose variance grows with the signal,
  ``var = a * x + b`` (photon-limited images). Each pixel's squared error is divided by
  the model's variance at the current prediction (held fixed in the gradient: the
  quasi-likelihood score ``sum (y - x) / var(x)``, whose root is an unbiased estimate of
  the mean, unlike the full Gaussian likelihood's log-variance term, which pulls the
  estimate towards larger variance). It is multiplied by the image's mean variance, so
  its values are on the squared error's scale (what backtracking thresholds expect).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


class SquaredError(nn.Module):
    """``(x - y) ** 2`` per pixel."""

    def pixel_error(self, predicted: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        return (predicted - observation).square()

    def forward(self, predicted: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        return self.pixel_error(predicted, observation.expand_as(predicted)).mean()

    def describe(self) -> dict:
        return {"name": "squared-error"}


class PoissonGaussianError(nn.Module):
    """``scale * (x - y) ** 2 / var(x)`` per pixel, ``var(x) = a * x + b`` (values in the
    units of the observation), ``var(x)`` at the detached prediction and at least
    ``min_variance`` (a tenth of the image's mean variance unless given), ``scale`` the
    mean variance over the observation."""

    def __init__(self, a, b, observation: torch.Tensor, min_variance: float | None = None):
        super().__init__()
        a_values = torch.as_tensor(a, dtype=torch.float32).reshape(-1)
        b_values = torch.as_tensor(b, dtype=torch.float32).reshape(-1)
        if not bool((a_values >= 0).all()):
            raise InputError(f"the Poisson-Gaussian gain a must be >= 0, got {a}")
        # One value for all channels, or one per channel of (C, H, W) / (N, C, H, W).
        shape = (-1, 1, 1) if a_values.numel() > 1 or b_values.numel() > 1 else ()
        self.register_buffer("a", a_values.reshape(shape) if shape else a_values[0])
        self.register_buffer("b", b_values.reshape(shape) if shape else b_values[0])
        mean_variance = float((self.a * observation.float() + self.b).mean().clamp_min(0))
        if not mean_variance > 0:
            raise InputError(f"the noise model var = {a} * x + {b} has no positive variance on this image")
        self.scale = mean_variance
        self.min_variance = float(min_variance) if min_variance is not None else 0.1 * mean_variance

    def variance(self, signal: torch.Tensor) -> torch.Tensor:
        return (self.a * signal + self.b).clamp_min(self.min_variance)

    def pixel_error(self, predicted: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        weight = self.scale / self.variance(predicted.detach())
        return (predicted - observation).square() * weight

    def forward(self, predicted: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        return self.pixel_error(predicted, observation.expand_as(predicted)).mean()

    def describe(self) -> dict:
        return {"name": "poisson-gaussian", "a": self.a.reshape(-1).tolist(), "b": self.b.reshape(-1).tolist(),
                "scale": self.scale,
                "min_variance": self.min_variance}


def describe(loss: nn.Module) -> dict:
    return loss.describe() if hasattr(loss, "describe") else {"name": type(loss).__name__}
