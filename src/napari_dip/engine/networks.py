"""The prior: the encoder-decoder network with skip connections of the DIP paper.

The network maps a fixed noise image ``z`` to an image. Its architecture is described by a
:class:`SkipNetConfig`, so presets and user choices are plain data that can be recorded
in metadata and compared.

Each scale ``i`` of the network:

* skip branch: ``kernel_skip`` convolution to ``channels_skip[i]`` channels, norm, activation
  (left out when ``channels_skip[i]`` is 0);
* down branch: stride-2 convolution to ``channels_down[i]``, norm, activation, convolution,
  norm, activation, then the deeper scales, then 2x upsampling;
* both branches concatenated, normalised, then a ``kernel_up`` convolution to
  ``channels_up[i]``, norm, activation, a 1x1 convolution, norm, activation.

A final 1x1 convolution maps to the output channels, optionally through a sigmoid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..errors import InputError
from .slice_ops import BilinearUp2, SlicePaddedConv2d

ACTIVATIONS = ("leaky_relu", "relu", "elu", "silu")
NORMALISATIONS = ("batch", "none")
PADDINGS = ("reflect", "zeros", "replicate")
UPSAMPLING = ("bilinear", "nearest", "bicubic")


@dataclass(frozen=True)
class SkipNetConfig:
    """Architecture of the skip network. Defaults are the paper's denoising network."""

    input_channels: int = 32
    channels_down: tuple[int, ...] = (128,) * 5
    channels_up: tuple[int, ...] = (128,) * 5
    channels_skip: tuple[int, ...] = (4,) * 5
    kernel_down: int = 3
    kernel_up: int = 3
    kernel_skip: int = 1
    upsample_mode: str = "bilinear"
    activation: str = "leaky_relu"
    normalization: str = "batch"
    padding: str = "reflect"
    output_sigmoid: bool = True
    #: The input ``z`` is uniform noise in [0, input_scale).
    input_scale: float = 0.1
    #: Normalise the concatenated skip and upsampled channels before the merging
    #: convolution (the reference code does); that convolution's output is normalised again
    #: right after, so leaving it out only changes the scale the convolution sees.
    merge_norm: bool = True
    #: Convolutions followed by a normalisation have a bias, as in the reference code. Batch
    #: normalisation subtracts each channel's mean, so such a bias has no effect on the
    #: output; ``False`` leaves it out (fewer parameters and gradients, same functions).
    conv_bias: bool = True
    #: Reflection padding and bilinear upsampling made of slices and sums
    #: (:mod:`napari_dip.engine.slice_ops`): the same function to float rounding, with
    #: backward passes free of CUDA atomics. Off: no faster on a CPU, and slower on an H100
    #: (paper network, 512², graphed float32 step 20.3 against 15.0 ms).
    slice_ops: bool = False

    def __post_init__(self):
        scales = len(self.channels_down)
        if scales < 1 or len(self.channels_up) != scales or len(self.channels_skip) != scales:
            raise InputError(
                "channels_down, channels_up and channels_skip must have the same length (one entry per scale)"
            )
        if min(self.channels_down) < 1 or min(self.channels_up) < 1 or min(self.channels_skip) < 0:
            raise InputError("channel counts must be positive (skip channels may be 0)")
        for name in ("kernel_down", "kernel_up", "kernel_skip"):
            size = getattr(self, name)
            if size < 1 or size % 2 == 0:
                raise InputError(f"{name} must be an odd positive kernel size, got {size}")
        for name, allowed in (
            ("upsample_mode", UPSAMPLING),
            ("activation", ACTIVATIONS),
            ("normalization", NORMALISATIONS),
            ("padding", PADDINGS),
        ):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.input_channels < 1:
            raise InputError("input_channels must be positive")

    @property
    def scales(self) -> int:
        return len(self.channels_down)

    def padded_size(self, size: int) -> int:
        """Smallest size >= ``size`` the network can process.

        Each scale halves the image, so the size must be a multiple of ``2 ** scales``,
        and the coarsest scale must stay larger than its convolution padding.
        """
        multiple = 2**self.scales
        coarsest = max(math.ceil(size / multiple), self.kernel_down // 2 + 1, self.kernel_up // 2 + 1)
        return multiple * coarsest

    def with_width(self, channels: int, skip: int | None = None) -> SkipNetConfig:
        """The same architecture with ``channels`` down/up channels at every scale."""
        skip_channels = self.channels_skip if skip is None else (skip,) * self.scales
        return replace(
            self,
            channels_down=(channels,) * self.scales,
            channels_up=(channels,) * self.scales,
            channels_skip=skip_channels,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    return nn.SiLU(inplace=True)


def _norm(name: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if name == "batch" else nn.Identity()


def _conv(cfg: SkipNetConfig, cin: int, cout: int, kernel: int, stride: int = 1, replicas: int = 1) -> nn.Conv2d:
    # Replicas are independent networks side by side: grouped convolutions never mix them.
    # Every convolution made here is followed by a normalisation (the head is made apart).
    bias = cfg.conv_bias or cfg.normalization == "none"
    conv = SlicePaddedConv2d if cfg.slice_ops and cfg.padding == "reflect" and kernel > 1 else nn.Conv2d
    return conv(
        cin * replicas,
        cout * replicas,
        kernel,
        stride=stride,
        padding=kernel // 2,
        padding_mode="zeros" if cfg.padding == "zeros" else cfg.padding,
        bias=bias,
        groups=replicas,
    )


def _conv_block(cfg: SkipNetConfig, cin: int, cout: int, kernel: int, stride: int = 1, replicas: int = 1):
    return nn.Sequential(
        _conv(cfg, cin, cout, kernel, stride, replicas),
        _norm(cfg.normalization, cout * replicas),
        _activation(cfg.activation),
    )


def _concat_per_replica(a: torch.Tensor, b: torch.Tensor, replicas: int) -> torch.Tensor:
    """Concatenate channels so that each replica's channels stay together: [a_k, b_k] per k."""
    if replicas == 1:
        return torch.cat([a, b], dim=1)
    n, _, h, w = a.shape
    joined = torch.cat([a.view(n, replicas, -1, h, w), b.view(n, replicas, -1, h, w)], dim=2)
    return joined.view(n, -1, h, w)


class _Scale(nn.Module):
    """One scale of the U-shaped network; holds the next coarser scale inside it."""

    def __init__(self, cfg: SkipNetConfig, index: int, in_channels: int, replicas: int = 1):
        super().__init__()
        down, up, skip = cfg.channels_down[index], cfg.channels_up[index], cfg.channels_skip[index]
        self.replicas = replicas
        self.skip = _conv_block(cfg, in_channels, skip, cfg.kernel_skip, 1, replicas) if skip else None
        self.down = nn.Sequential(
            _conv_block(cfg, in_channels, down, cfg.kernel_down, 2, replicas),
            _conv_block(cfg, down, down, cfg.kernel_down, 1, replicas),
        )
        self.coarser = _Scale(cfg, index + 1, down, replicas) if index + 1 < cfg.scales else None
        from_below = cfg.channels_up[index + 1] if self.coarser is not None else down
        align = False if cfg.upsample_mode in ("bilinear", "bicubic") else None
        if cfg.slice_ops and cfg.upsample_mode == "bilinear":
            self.upsample = BilinearUp2()
        else:
            self.upsample = nn.Upsample(scale_factor=2, mode=cfg.upsample_mode, align_corners=align)
        merge = cfg.normalization if cfg.merge_norm else "none"
        self.merge_norm = _norm(merge, (skip + from_below) * replicas)
        self.fuse = nn.Sequential(
            _conv_block(cfg, skip + from_below, up, cfg.kernel_up, 1, replicas),
            _conv_block(cfg, up, up, 1, 1, replicas),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.coarser is not None:
            y = self.coarser(y)
        y = self.upsample(y)
        if self.skip is not None:
            y = _concat_per_replica(self.skip(x), y, self.replicas)
        return self.fuse(self.merge_norm(y))


class SkipNet(nn.Module):
    """Encoder-decoder with skip connections, ``(N, input_channels, H, W) -> (N, C, H, W)``.

    ``H`` and ``W`` must be valid sizes for the configuration (see
    :meth:`SkipNetConfig.padded_size`); the fit loop pads the noise input accordingly.

    With ``replicas=K`` the module holds K independent networks that run in one pass:
    input channels ``[k * input_channels, (k + 1) * input_channels)`` feed replica ``k``,
    whose output is channels ``[k * C, (k + 1) * C)``. Normalisation is per channel, so with
    one image per batch the replicas share nothing.
    """

    def __init__(self, cfg: SkipNetConfig, out_channels: int, replicas: int = 1):
        super().__init__()
        if out_channels < 1:
            raise InputError("the network needs at least one output channel")
        if replicas < 1:
            raise InputError("the number of replicas must be at least 1")
        self.config = cfg
        self.replicas = replicas
        self.body = _Scale(cfg, 0, cfg.input_channels, replicas)
        self.head = nn.Conv2d(cfg.channels_up[0] * replicas, out_channels * replicas, 1, groups=replicas)
        self.output = nn.Sigmoid() if cfg.output_sigmoid else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.head(self.body(z)))

    @classmethod
    def side_by_side(cls, networks: list[SkipNet]) -> SkipNet:
        """One module running ``networks`` (same configuration) as replicas, weights copied."""
        first = networks[0]
        out_channels = first.head.out_channels // first.replicas
        combined = cls(first.config, out_channels, replicas=len(networks))
        states = [net.state_dict() for net in networks]
        merged = {
            key: value if value.ndim == 0 else torch.cat([state[key] for state in states], dim=0)
            for key, value in states[0].items()
        }
        combined.load_state_dict(merged)
        return combined


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


#: The paper's networks (Ulyanov et al. 2018, supplementary material).
PAPER = SkipNetConfig()
#: The paper's inpainting network: no skip connections, nearest-neighbour upsampling.
PAPER_INPAINT = SkipNetConfig(channels_skip=(0,) * 5, upsample_mode="nearest")
#: A narrower network that is practical on a CPU (about 8x fewer parameters). On a 128x128
#: grey crop at sigma 25 it matched the paper network's best PSNR at a third of its time.
FAST = PAPER.with_width(48)
FAST_INPAINT = PAPER_INPAINT.with_width(48)
#: Denoising needs even fewer channels: with 32 instead of 48 a step on a 2-core CPU took
#: 0.54-0.60x as long, the automatically stopped fits as many iterations, and their results
#: were as good (16 crops of Set12 and CSet9 at sigma 25 and 50: +0.05 dB on the mean, the
#: worst -0.18; BENCHMARKS.md "A narrower network for denoising"). Super-resolution and
#: inpainting keep 48: with 32, 128² inpainting fits peaked 0.3 dB lower on two crops
#: and, with their ``fast`` schedule (Adam's beta2 0.95), 1.6-1.7 dB below 48 channels on Barbara;
#: with that schedule, 32 channels reached a given super-resolution quality about as soon as 48
#: (BENCHMARKS.md "Super-resolution and inpainting: Adam with a shorter memory, and a
#: shorter budget").
FAST_DENOISE = PAPER.with_width(32)
#: Denoising by recorruption (the noisy image as the input, ``FitConfig.recorrupt_sigma``)
#: needs still less: the network no longer builds the image out of noise, it maps the noisy
#: image to a cleaner one. With 16 channels in 3 scales an iteration took 0.44-0.59x as long
#: as with ``FAST_DENOISE`` on a 2-core CPU, and on 9 crops of Set12 and CSet9 (sigma 25 and
#: 50) the fit peaked 0.09 dB lower on the mean (+0.06 to -0.31 dB), in about half the time
#: (BENCHMARKS.md "A smaller network for recorruption").
FAST_RECORRUPT = SkipNetConfig(channels_down=(16,) * 3, channels_up=(16,) * 3, channels_skip=(4,) * 3)

#: Per preset, the network of each task; ``default`` serves the tasks not named.
NETWORK_PRESETS: dict[str, dict[str, SkipNetConfig]] = {
    "paper": {"default": PAPER, "inpaint": PAPER_INPAINT},
    "fast": {"default": FAST, "denoise": FAST_DENOISE, "inpaint": FAST_INPAINT},
}
#: Per preset, the denoising network when the fit recorrupts; a preset not named keeps its
#: denoising network (``paper``: the paper's, whatever the input).
RECORRUPTION_NETWORKS: dict[str, SkipNetConfig] = {"fast": FAST_RECORRUPT}
