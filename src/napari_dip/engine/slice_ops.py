"""Reflection padding and bilinear ×2 upsampling built from slices, flips and weighted sums.

They compute what ``F.pad(..., mode="reflect")`` and ``F.interpolate(..., scale_factor=2,
mode="bilinear", align_corners=False)`` compute, to float rounding, but their backward
passes are slices and sums. PyTorch's own backward kernels for these two operations add
into the input's gradient with atomics on CUDA, and the paper network runs them on
128-channel maps at full resolution. Whether that is what keeps its 512² step at 14 ms on
an H200 is unmeasured (``benchmarks/step_profile.py`` and ``step_variants.py --slice-ops``
are queued for a GPU lease). On the 2-core CPU they are no faster: a float32 step of the
recorruption network at 128² took 35.9 and 29.4 ms with them against 30.3 and 34.2 ms
without, within the machine's spread (2026-11-27, ``python benchmarks/step_variants.py
--device cpu --sizes 128 --slice-ops --network recorruption --warmup 5 --iterations 50``,
``benchmarks/results/step-variants-slices-cpu.json``). Under bf16 autocast their weighted
sums round in bf16, where PyTorch's upsampling kernel accumulates in float32.
``SkipNetConfig.slice_ops`` switches the skip network to them; it is off.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``x`` padded by ``pad`` pixels on each side of its last two axes, mirrored about the
    edge pixels (``F.pad(x, (pad,) * 4, mode="reflect")``).

    >>> x = torch.arange(9.0).view(1, 1, 3, 3)
    >>> bool(torch.equal(reflect_pad(x, 1), F.pad(x, (1, 1, 1, 1), mode="reflect")))
    True
    """
    if pad == 0:
        return x
    if pad >= min(x.shape[-2:]):
        raise ValueError(f"reflection padding of {pad} needs more than {pad} pixels a side, got {tuple(x.shape[-2:])}")
    x = torch.cat([x[..., 1 : pad + 1].flip(-1), x, x[..., -pad - 1 : -1].flip(-1)], dim=-1)
    return torch.cat([x[..., 1 : pad + 1, :].flip(-2), x, x[..., -pad - 1 : -1, :].flip(-2)], dim=-2)


def _double_last_axis(x: torch.Tensor) -> torch.Tensor:
    # Output 2i lies a quarter pixel before input i, output 2i + 1 a quarter after; beyond
    # the edges the edge pixel repeats, as PyTorch clamps its source coordinates.
    edged = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    before = 0.25 * edged[..., :-2] + 0.75 * x
    after = 0.75 * x + 0.25 * edged[..., 2:]
    return torch.stack([before, after], dim=-1).flatten(-2)


def bilinear_up2(x: torch.Tensor) -> torch.Tensor:
    """``x`` twice as large on its last two axes by bilinear interpolation
    (``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)``).

    >>> x = torch.rand(1, 2, 4, 5, dtype=torch.float64)
    >>> expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    >>> bool(torch.allclose(bilinear_up2(x), expected))
    True
    """
    # Contiguous, as PyTorch's own result is: the layers after it would copy a strided one.
    return _double_last_axis(_double_last_axis(x).transpose(-1, -2)).transpose(-1, -2).contiguous()


class BilinearUp2(nn.Module):
    """:func:`bilinear_up2` as a layer (in place of ``nn.Upsample(scale_factor=2)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bilinear_up2(x)


class SlicePaddedConv2d(nn.Conv2d):
    """A ``padding_mode="reflect"`` convolution with a square kernel whose padding is
    :func:`reflect_pad`: the same weights, state-dict keys and outputs as ``nn.Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding[0] != self.padding[1]:
            raise ValueError(f"SlicePaddedConv2d pads both axes alike, got padding {self.padding}")

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(reflect_pad(x, self.padding[0]), weight, bias, self.stride, 0, self.dilation, self.groups)
