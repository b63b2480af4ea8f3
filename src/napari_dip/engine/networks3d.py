"""The prior for volumes: the skip network of :mod:`.networks` with 3D convolutions.

A :class:`VolumeNetConfig` is a :class:`~.networks.SkipNetConfig` (widths, kernels,
activation, normalisation, padding: the same architecture as the 2D prior) together with
one downsampling stride ``(z, y, x)`` per scale. The strides follow the voxel spacing
(:func:`downsampling_schedule`): microscope stacks usually have Z steps several times
coarser than their pixels, and halving Z at the first scale would merge planes that are
already far apart while Y and X are still finely sampled. So a scale halves only Y and X
(stride ``(1, 2, 2)``) while the Z spacing is at least :data:`ANISOTROPY_RATIO` times the
in-plane spacing at that scale, and all three axes once the voxel is roughly isotropic
(the mirror case, finer Z than XY, halves Z alone first). An axis is no longer halved once
it would drop below the smallest size a convolution can pad, so a 5-plane stack is not
padded to 32 planes.

:class:`VolumeSkipNet` maps ``(N, input_channels, Z, Y, X) -> (N, C, Z, Y, X)``; the fit
loop pads the noise input to :meth:`VolumeNetConfig.padded_shape` and crops the output,
as it does for images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import InputError
from .networks import SkipNetConfig

#: Z is left at full resolution while its spacing is at least this many times the in-plane
#: spacing (and Y, X while theirs is this many times Z's).
ANISOTROPY_RATIO = 1.5

Stride = tuple[int, int, int]


def downsampling_schedule(
    scales: int,
    spacing: tuple[float, float, float] | None = None,
    shape: tuple[int, int, int] | None = None,
    min_size: int = 2,
    ratio: float = ANISOTROPY_RATIO,
) -> tuple[Stride, ...]:
    """One ``(z, y, x)`` stride per scale for voxels of ``spacing`` (``None``: isotropic).

    An axis is halved at a scale when the voxel is not too coarse along it compared with
    the others (the coarse axis waits until the others have caught up) and, when ``shape``
    is given, when it still has at least ``2 * min_size`` samples at that scale.

    >>> downsampling_schedule(4, (3.0, 1.0, 1.0))  # Z three times coarser than XY
    ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    >>> downsampling_schedule(3, (1.0, 1.0, 1.0))
    ((2, 2, 2), (2, 2, 2), (2, 2, 2))
    >>> downsampling_schedule(4, None, (5, 64, 64))  # few planes: Z is halved once
    ((2, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2))
    """
    if scales < 1:
        raise InputError(f"a network needs at least one scale, got {scales}")
    z_step, y_step, x_step = _check_spacing(spacing)
    plane_step = (y_step + x_step) / 2
    sizes = None if shape is None else [float(n) for n in shape]
    strides = []
    z_left = plane_left = True  # whether the axis is still large enough to be halved
    for _ in range(scales):
        if sizes is not None:
            z_left = sizes[0] / 2 >= min_size
            plane_left = min(sizes[1:]) / 2 >= min_size
        # An axis that can no longer be halved does not hold the other one back.
        halve_z = z_left and (z_step < ratio * plane_step or not plane_left)
        halve_plane = plane_left and (plane_step < ratio * z_step or not z_left)
        stride = [2 if halve_z else 1, 2 if halve_plane else 1, 2 if halve_plane else 1]
        if sizes is not None:
            sizes = [math.ceil(size / s) for size, s in zip(sizes, stride)]
        z_step *= stride[0]
        plane_step *= stride[1]
        strides.append(tuple(stride))
    return tuple(strides)


def _check_spacing(spacing) -> tuple[float, float, float]:
    if spacing is None:
        return 1.0, 1.0, 1.0
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"spacing must be three positive numbers (z, y, x), e.g. (2.0, 0.5, 0.5), got {spacing!r}")
    return values


@dataclass(frozen=True)
class VolumeNetConfig:
    """A 3D skip network: the architecture of ``plane`` with a stride per scale."""

    plane: SkipNetConfig
    strides: tuple[Stride, ...]
    #: The voxel spacing ``(z, y, x)`` the strides were chosen for (``None``: isotropic).
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        if len(self.strides) != self.plane.scales:
            raise InputError(f"one stride per scale is needed: {self.plane.scales} scales, {len(self.strides)} strides")
        for stride in self.strides:
            if len(stride) != 3 or any(s not in (1, 2) for s in stride):
                raise InputError(f"strides are (z, y, x) with entries 1 or 2, got {stride}")

    @classmethod
    def for_volume(
        cls, plane: SkipNetConfig, shape: tuple[int, int, int], spacing: tuple[float, float, float] | None = None
    ) -> VolumeNetConfig:
        """The network for a ``(Z, Y, X)`` volume with voxels of ``spacing``."""
        min_size = max(plane.kernel_down, plane.kernel_up) // 2 + 1
        strides = downsampling_schedule(plane.scales, spacing, shape, min_size=min_size)
        spacing = None if spacing is None else tuple(float(s) for s in spacing)
        return cls(plane, strides, spacing)

    # The fit loop reads these as it reads them from a SkipNetConfig.
    @property
    def input_channels(self) -> int:
        return self.plane.input_channels

    @property
    def input_scale(self) -> float:
        return self.plane.input_scale

    @property
    def scales(self) -> int:
        return self.plane.scales

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Smallest ``(Z, Y, X)`` >= ``shape`` the strides divide down to a size the
        coarsest convolution can still pad.

        >>> from napari_dip.engine.networks import SkipNetConfig
        >>> cfg = VolumeNetConfig(SkipNetConfig().with_width(8), ((1, 2, 2),) * 2 + ((2, 2, 2),) * 3)
        >>> cfg.padded_shape((5, 13, 17))
        (16, 64, 64)
        """
        if len(shape) != 3:
            raise InputError(f"a volume is (Z, Y, X), got a shape of {len(shape)} dimensions: {tuple(shape)}")
        smallest = max(self.plane.kernel_down, self.plane.kernel_up) // 2 + 1
        padded = []
        for axis, size in enumerate(shape):
            multiple = math.prod(stride[axis] for stride in self.strides)
            padded.append(multiple * max(math.ceil(size / multiple), smallest))
        return tuple(padded)

    def memory_bytes(self, channels: int, shape: tuple[int, int, int]) -> int:
        """Rough peak memory of one float32 training step (the same count of kept
        activations as :func:`napari_dip.engine.fit.estimate_memory_bytes` for images)."""
        cfg = self.plane
        voxels = float(math.prod(self.padded_shape(shape)))
        floats = cfg.input_channels * voxels * 2
        for i, stride in enumerate(self.strides):
            coarser = voxels / math.prod(stride)
            down, up, skip = cfg.channels_down[i], cfg.channels_up[i], cfg.channels_skip[i]
            below = cfg.channels_up[i + 1] if i + 1 < cfg.scales else down
            floats += 3 * skip * voxels + 6 * down * coarser + 2 * (skip + below) * voxels + 6 * up * voxels
            voxels = coarser
        floats += channels * math.prod(self.padded_shape(shape)) * 4
        return int(1.5 * 4 * floats) + 64 * 2**20

    def to_dict(self) -> dict:
        return {
            "volumetric": True,
            **self.plane.to_dict(),
            "strides": [list(s) for s in self.strides],
            "spacing": None if self.spacing is None else list(self.spacing),
        }

    def asdict(self) -> dict:
        return asdict(self)


def _activation(name: str) -> nn.Module:
    return {
        "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "silu": lambda: nn.SiLU(inplace=True),
    }[name]()


def _block(cfg: SkipNetConfig, cin: int, cout: int, kernel: int, stride: Stride | int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(
            cin, cout, kernel, stride=stride, padding=kernel // 2,
            padding_mode="zeros" if cfg.padding == "zeros" else cfg.padding,
        ),
        nn.BatchNorm3d(cout) if cfg.normalization == "batch" else nn.Identity(),
        _activation(cfg.activation),
    )


class _Scale3d(nn.Module):
    """One scale: skip branch, strided down branch with the coarser scales, upsampling,
    merge (the same structure as the 2D network's ``_Scale``)."""

    def __init__(self, cfg: VolumeNetConfig, index: int, in_channels: int):
        super().__init__()
        net = cfg.plane
        down, up, skip = net.channels_down[index], net.channels_up[index], net.channels_skip[index]
        stride = cfg.strides[index]
        self.skip = _block(net, in_channels, skip, net.kernel_skip) if skip else None
        self.down = nn.Sequential(
            _block(net, in_channels, down, net.kernel_down, stride),
            _block(net, down, down, net.kernel_down),
        )
        self.coarser = _Scale3d(cfg, index + 1, down) if index + 1 < net.scales else None
        from_below = net.channels_up[index + 1] if self.coarser is not None else down
        # trilinear is bilinear's 3D form; bicubic has none in 3D, trilinear stands in.
        mode = "nearest" if net.upsample_mode == "nearest" else "trilinear"
        align = None if mode == "nearest" else False
        self.upsample = nn.Upsample(scale_factor=tuple(float(s) for s in stride), mode=mode, align_corners=align)
        merged = skip + from_below
        self.merge_norm = nn.BatchNorm3d(merged) if net.normalization == "batch" else nn.Identity()
        self.fuse = nn.Sequential(_block(net, merged, up, net.kernel_up), _block(net, up, up, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.coarser is not None:
            y = self.coarser(y)
        y = self.upsample(y)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.fuse(self.merge_norm(y))


class VolumeSkipNet(nn.Module):
    """Encoder-decoder with skip connections, ``(N, input_channels, Z, Y, X) -> (N, C, Z, Y, X)``.

    ``(Z, Y, X)`` must be a padded shape of the configuration
    (:meth:`VolumeNetConfig.padded_shape`).
    """

    def __init__(self, cfg: VolumeNetConfig, out_channels: int):
        super().__init__()
        if out_channels < 1:
            raise InputError("the network needs at least one output channel")
        self.config = cfg
        self.replicas = 1
        self.body = _Scale3d(cfg, 0, cfg.input_channels)
        self.head = nn.Conv3d(cfg.plane.channels_up[0], out_channels, 1)
        self.output = nn.Sigmoid() if cfg.plane.output_sigmoid else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.head(self.body(z)))
