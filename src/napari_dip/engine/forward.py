"""Forward models: what degraded the image, as differentiable maps ``A``.

The fit minimises ``mean((A(f(z)) - y) ** 2)``, so each task only has to say what ``A`` is
and how large the image in front of it is:

* :class:`Identity` for denoising,
* :class:`KnownPixels` for inpainting (holes are multiplied out of the loss),
* :class:`LanczosDownsampler` for super-resolution.

Each is a small ``torch.nn.Module`` holding only fixed buffers (no parameters).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

SUPPORTED_FACTORS = (2, 3, 4, 8)


class ForwardModel(nn.Module):
    """Base class: ``forward(x)`` is ``A(x)``; the defaults suit size-preserving models."""

    def image_size(self, observed_size: tuple[int, int]) -> tuple[int, int]:
        """Size of the image the network must produce for an observation of this size."""
        return observed_size

    def prepare_observation(self, observation: torch.Tensor) -> torch.Tensor:
        """What ``A(x)`` is compared with; by default the observation as it is."""
        return observation

    def observed_weight(self) -> torch.Tensor | None:
        """1 where the observation holds data, 0 where it holds none; ``None``: data everywhere."""
        return None


class Identity(ForwardModel):
    """``A(x) = x``: the observation is the image itself plus noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class KnownPixels(ForwardModel):
    """``A(x) = m * x``: only pixels where ``m`` is 1 were observed.

    ``known`` has shape ``(1, H, W)`` (one mask for all channels) or ``(C, H, W)``; for a
    volume ``(1 or C, Z, Y, X)``. The values of the observation in the holes are ignored.
    """

    def __init__(self, known: torch.Tensor | np.ndarray):
        super().__init__()
        known = torch.as_tensor(np.asarray(known, dtype=np.float32))
        if known.ndim not in (3, 4):
            raise ValueError(f"known-pixel mask must be (1 or C, H, W) or (1 or C, Z, Y, X), got {tuple(known.shape)}")
        self.register_buffer("known", known[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known

    def prepare_observation(self, observation: torch.Tensor) -> torch.Tensor:
        # Whatever values the holes hold, they must not reach the loss.
        return observation * self.known

    def observed_weight(self) -> torch.Tensor:
        return self.known


def lanczos_kernel(factor: int, lobes: int = 2) -> np.ndarray:
    """1D Lanczos anti-aliasing kernel for downsampling by an integer ``factor``.

    The window ``sinc(x) * sinc(x / lobes)`` for ``|x| < lobes`` is stretched by the
    factor and sampled at the high-resolution pixel centres around one low-resolution
    pixel centre: ``4 * factor`` taps for even factors, ``4 * factor - 1`` for odd ones
    (with ``lobes=2``). The taps sum to 1, so flat regions keep their value.
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    taps = 2 * lobes * factor - (factor % 2)
    offsets = (np.arange(taps) - (taps - 1) / 2) / factor
    weights = np.sinc(offsets) * np.sinc(offsets / lobes)
    weights[np.abs(offsets) >= lobes] = 0.0
    return weights / weights.sum()


class LanczosDownsampler(ForwardModel):
    """``A(x)``: anti-alias with a separable Lanczos-2 kernel, then keep every ``factor``-th pixel.

    Low-resolution pixel ``j`` is centred on high-resolution position
    ``j * factor + (factor - 1) / 2``, so the grids line up at their centres. Borders are
    extended by replication, which keeps constant images constant.
    """

    def __init__(self, factor: int, channels: int):
        super().__init__()
        if factor not in SUPPORTED_FACTORS:
            raise InputError(f"super-resolution factor must be one of {SUPPORTED_FACTORS}, got {factor}")
        self.factor = int(factor)
        kernel = torch.as_tensor(lanczos_kernel(self.factor), dtype=torch.float32)
        self.register_buffer("kernel_rows", kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1))
        self.register_buffer("kernel_cols", kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1))
        self.pad = (kernel.numel() - self.factor) // 2
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pad
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        x = F.conv2d(x, self.kernel_rows.to(x.dtype), stride=(self.factor, 1), groups=self.channels)
        return F.conv2d(x, self.kernel_cols.to(x.dtype), stride=(1, self.factor), groups=self.channels)

    def image_size(self, observed_size: tuple[int, int]) -> tuple[int, int]:
        return observed_size[0] * self.factor, observed_size[1] * self.factor


def describe(model: nn.Module) -> str:
    """One line naming a forward model, for logs and metadata."""
    if isinstance(model, LanczosDownsampler):
        return f"Lanczos-2 downsampling x{model.factor}"
    if isinstance(model, KnownPixels):
        known = float(model.known.mean())
        return f"known-pixel mask ({100 * (1 - known):.1f} % missing)"
    return "identity"


__all__ = [
    "ForwardModel",
    "Identity",
    "KnownPixels",
    "LanczosDownsampler",
    "SUPPORTED_FACTORS",
    "lanczos_kernel",
    "describe",
]
