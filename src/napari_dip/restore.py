"""Public API: numpy in, numpy out, in the style of ``skimage.restoration``.

``denoise``, ``super_resolve`` and ``inpaint`` return the finished restoration;
``iter_restore`` is the streaming form a GUI or a progress bar consumes, yielding
:class:`~napari_dip.engine.fit.Snapshot` objects whose arrays already have the input's layout,
dtype and value range.

Stacks (``axes`` with ``Z`` or ``T``, see :mod:`napari_dip.axes`) are restored plane by
plane: the task functions return the whole stack, ``iter_restore_planes`` streams
``(index, snapshot)`` pairs. A plane starts from the previous plane's fitted network
(warm start, :func:`~napari_dip.engine.presets.warm_start_config`) unless
``warm_start=False`` or, for fits from a noise input, its picture has drifted off the
chain's first plane (:mod:`napari_dip.drift`); the planes share one value range, so they
stay comparable.

Inpainting returns the observed pixels exactly as they were and takes only the holes from
the network (``keep_known=True``): the network reproduces known pixels closely but not
exactly, and a user who filled holes expects the rest of the image untouched.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from . import __version__
from .arrays import (
    ImageLayout,
    keep_known_pixels,
    prepare_image,
    prepare_mask,
    restore_layout,
    value_range,
    warn_if_inverted,
)
from .axes import layout_for
from .errors import InputError
from .engine.fit import Fitter, Snapshot
from .engine.forward import ForwardModel, Identity, KnownPixels, LanczosDownsampler
from .engine.networks import SkipNetConfig
from .engine.presets import (
    DEFAULT_PRESET,
    TASKS,
    network_for,
    recorrupts_by_default,
    resolve_preset,
    settings_for,
    warm_start_config,
)
from .engine import presets
from .engine.stopping import CORRELATED_NOISE, StoppingConfig, neighbour_noise_correlation
from .noise_model import NoisePlan, plan_noise, spread_in_user_units
from .residual import noise_residual
from .engine.tiling import TiledFit, plan_fit_tiles

#: At most this many planes of a stack (evenly spaced) give the stack's noise estimate.
NOISE_SAMPLE_PLANES = 16
#: The stack's noise model is estimated on at most this many pixels per channel (or one
#: plane's, if more), pooled from the centres of the sampled planes.
NOISE_SAMPLE_PIXELS = 2**22


def _centre_region(shape: tuple[int, int], planes: int) -> tuple[slice, slice]:
    """The centre of a ``shape`` plane that ``planes`` of fit in :data:`NOISE_SAMPLE_PIXELS`
    (or one plane's pixels), with the plane's aspect ratio and even sides."""
    height, width = shape
    budget = max(height * width, NOISE_SAMPLE_PIXELS) // max(planes, 1)
    scale = min(1.0, (budget / (height * width)) ** 0.5)
    h = min(height, max(32, int(height * scale) // 2 * 2))
    w = min(width, max(32, int(width * scale) // 2 * 2))
    top, left = (height - h) // 2, (width - w) // 2
    return slice(top, top + h), slice(left, left + w)


def iter_restore(
    task: str,
    image,
    *,
    mask=None,
    mask_marks: str = "holes",
    keep_known: bool = True,
    factor: int | None = None,
    preset: str = DEFAULT_PRESET,
    snapshot_every: int | None = 100,
    snapshot_seconds: float | None = None,
    channel_axis: int | None = None,
    axes: str | None = None,
    iterations: int | None = None,
    learning_rate: float | None = None,
    reg_noise_std: float | None = None,
    average_weight: float | None = None,
    channels: int | None = None,
    network: SkipNetConfig | None = None,
    seed: int | None = 0,
    device: str = "auto",
    precision: str | None = None,
    backtrack: bool | None = None,
    stopping: str | StoppingConfig | None = None,
    patience: int | None = None,
    runs: int | None = None,
    threads: int | str | None = None,
    compile: bool | None = None,  # noqa: A002 - the FitConfig field it sets
    cuda_graphs: bool | None = None,
    noise: str = "auto",
    noise_fit: str | None = None,
    gain: float | None = None,
    offset: float | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    recorrupt: bool | None = None,
) -> Restoration:
    """Restore ``image`` step by step, yielding snapshots as the fit proceeds.

    Parameters
    ----------
    task : {"denoise", "super-resolve", "inpaint"}
    image : ndarray
        2D grey, channels-last RGB/RGBA, or channel-first multichannel; uint8, uint16 or
        float. See :mod:`napari_dip.arrays` for how values are normalised. One image:
        for a stack (Z, T) use :func:`iter_restore_planes` (a stack of one plane is
        accepted, and the snapshots have its shape).
    mask : ndarray, optional
        Inpainting only: nonzero marks a missing pixel (a hole to fill), as painted in a
        napari Labels layer. ``(H, W)`` for all channels, or one plane per channel.
    mask_marks : {"holes", "known"}
        Inpainting only: what the nonzero pixels of ``mask`` are. ``"known"`` suits masks
        where 255 marks the known pixels (those published with the paper). A mask that
        makes more than half of the image a hole draws an
        :class:`~napari_dip.errors.InputWarning`: it is probably inverted.
    keep_known : bool
        Inpainting only: ``True`` (default) returns the known pixels exactly as they are
        in ``image`` and the network's values in the holes only, in ``output`` and
        ``average`` alike; ``False`` returns the network's whole image.
    factor : {2, 3, 4, 8}, optional
        Super-resolution only: the output is ``factor`` times larger on each side.
    preset : {"auto", "paper", "fast"}
        ``paper`` is the published network and schedule; ``fast`` a network with 48
        (denoising: 32) instead of 128 channels per scale, practical on a CPU; ``auto`` (default) is
        the ``paper`` network on a CUDA GPU and ``fast`` otherwise, denoising by recorruption
        with either (``recorrupt`` below). The settings record both (``preset``,
        ``preset_requested``) and whether the fit recorrupted (``fit.recorrupt_sigma``).
    snapshot_every : int or None
        Yield a snapshot every this many iterations; ``None`` yields only the final one.
        Snapshots copy from the device, so fewer is faster.
    snapshot_seconds : float, optional
        Also yield a snapshot whenever this many seconds have passed since the last one
        (e.g. 2.0 for a GUI: first feedback quickly even when iterations are slow). The
        first counts from the call, set-up included (after the first step if the set-up
        took longer); a stack's later planes count from their own start.
    channel_axis : {None, 0, -1}
        Where the channels are; ``None`` guesses where that is unambiguous: 2D is grey,
        ``(H, W, 3 or 4)`` colour; any other 3D array needs ``channel_axis`` or ``axes``
        (:func:`~napari_dip.axes.layout_for`).
    axes : str, optional
        One letter per dimension from ``TZCYX`` (``S`` counts as ``C``), e.g. ``"YX"``,
        ``"CYX"``, ``"YXC"``; see :mod:`napari_dip.axes`.
    iterations, learning_rate, reg_noise_std, average_weight, precision, backtrack
        Override the preset's fit settings (:class:`~napari_dip.engine.fit.FitConfig`). For
        denoising, the default ``reg_noise_std`` (input jitter) follows the noise level
        estimated from the image (:func:`~napari_dip.engine.presets.denoising_jitter`).
    channels : int, optional
        Width of the preset's network (channels per scale).
    network : SkipNetConfig, optional
        A network to use instead of the preset's.
    seed : int or None
        Seed for the weights, the input noise and its jitter; runs on a CPU with the same
        seed give the same result. ``None`` draws one (recorded in the final snapshot).
    device : str
        ``auto`` (CUDA, then Apple MPS, then CPU), or ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    stopping : {None, "wmv", "validation", "none"} or StoppingConfig
        Automatic stopping, on by default (``None``: the task's default rule). ``"none"``
        runs every iteration of the budget. See :mod:`napari_dip.engine.stopping`.
    patience : int, optional
        Iterations without improvement before the stopping rule ends the fit.
    runs : int, optional
        Number of independent fits (seeds ``seed``, ``seed + 1``, ...) averaged into the
        result; they run together in one batched pass. The paper gains about 0.6 dB from 2.
    threads : int or "auto", optional
        CPU threads; by default PyTorch's setting. ``"auto"`` takes as many as there are
        idle cores when the fit starts, so a busy machine is not oversubscribed, but then
        the result depends on the load (recorded as ``settings["threads"]``).
    compile : bool, optional
        Run the network through ``torch.compile``, its kernels cached in the user's cache
        folder so that later runs start in seconds (the first compiles for minutes). On the
        2-core CPU a compiled step was 1.07-1.14x faster (BENCHMARKS.md); off by default.
    cuda_graphs : bool, optional
        CUDA only: capture one whole step (forward, loss, backward, Adam update) as a CUDA
        graph after three warm-up steps and replay it for the rest of the fit, so the
        thousands of kernel launches per step cost one (3x faster at 256² on an H200).
        ``None`` (default): on for CUDA; ``False`` turns it off; ignored on other devices
        and in float16.
    noise : {"auto", "gaussian", "poisson-gaussian"}
        Denoising only: the noise model. ``"poisson-gaussian"`` is photon-limited noise,
        ``var = a * signal + b`` (fluorescence microscopy); ``"auto"`` (default) estimates
        ``a`` and ``b`` from the image and picks it when the variance clearly grows with the
        signal, else Gaussian (:mod:`napari_dip.noise`). The choice, ``a`` and ``b`` (in the
        image's units) are recorded in ``settings["noise"]``.
    noise_fit : {"gat", "weighted"}, optional
        How a Poisson-Gaussian model is fitted: in the variance-stabilised space of the
        generalised Anscombe transform, mapped back with its exact unbiased inverse
        (``"gat"``), or on the raw values with a variance-weighted squared error
        (``"weighted"``); the default is :data:`napari_dip.noise_model.DEFAULT_NOISE_FIT`.
    gain, offset : float, optional
        The camera's gain (``a``, image units per photo-electron) and baseline (the value of
        no light), in the image's units. Given ones are used instead of estimated.
    tile_size, tile_overlap : int, optional
        Restore the image in overlapping tiles of at most ``tile_size`` pixels a side (of
        the input), blended with a raised-cosine ramp over the overlap (at least
        ``tile_overlap`` pixels, by default an eighth of the tile), so that no seam shows
        (:mod:`napari_dip.engine.tiling`). By default an image is tiled only when its fit's
        estimated memory does not fit the device's free memory. Every tile is fitted with
        the whole image's noise estimate and the same settings; its snapshots name the tile
        (``snapshot.tile``, ``(k, n)``) and count that tile's iterations, and the final one
        records the tiles in ``settings["tiling"]``.
    recorrupt : bool, optional
        Denoising only: fit by recorruption, the noisy image as the network's input and
        fresh noise of the estimated level split between input and target at every step
        (``FitConfig.recorrupt_sigma``), instead of the paper's fixed noise input. ``None``
        (default): as the preset does it, recorruption for ``auto`` (whichever network it
        picks) and ``fast``, the paper's way for ``paper`` named, for noise that is not
        correlated between neighbours (else ``settings["recorruption_note"]`` says why
        not); photon-limited noise is recorrupted through the Anscombe transform, never
        with ``noise_fit="weighted"``, whose noise has no single level.

    Yields
    ------
    Snapshot
        The last one has ``done=True``, its ``stop_reason`` and the ``settings`` used; with
        automatic stopping its arrays come from ``best_iteration``. With ``runs`` >= 2,
        ``uncertainty`` is the per-pixel standard deviation of the runs' results (float32,
        the image's units and layout): large where the runs disagree, i.e. where the result
        is not determined by the data. The stream returned is a :class:`Restoration`: what
        was settled before the first step (``settings``, ``recorrupts``) can be read first.

    Examples
    --------
    >>> from skimage import data
    >>> image = data.camera()[:64, :64]
    >>> for snap in iter_restore("denoise", image, preset="fast", iterations=4, snapshot_every=2):
    ...     print(snap.iteration, snap.average.dtype, snap.average.shape)
    2 uint8 (64, 64)
    4 uint8 (64, 64)
    """
    job = _Job(
        task, image, axes=axes, channel_axis=channel_axis, mask=mask, mask_marks=mask_marks, keep_known=keep_known,
        factor=factor, preset=preset, snapshot_every=snapshot_every, snapshot_seconds=snapshot_seconds, seed=seed,
        device=device, stopping=stopping, patience=patience, channels=channels, network=network,
        iterations=iterations, learning_rate=learning_rate, reg_noise_std=reg_noise_std,
        average_weight=average_weight, precision=precision, backtrack=backtrack, runs=runs, threads=threads,
        compile=compile, cuda_graphs=cuda_graphs,
        noise=noise, noise_fit=noise_fit, gain=gain, offset=offset,
        tile_size=tile_size, tile_overlap=tile_overlap, recorrupt=recorrupt, single=True,
    )
    if not job.layout.is_stack:
        return Restoration.of(job, job.single())
    # A stack of one plane: the snapshots get the stack's shape (size-1 axes put back).
    return Restoration.of(job, (
        replace(
            snap, output=job.layout.expand(snap.output), average=job.layout.expand(snap.average),
            uncertainty=None if snap.uncertainty is None else job.layout.expand(snap.uncertainty),
        )
        for _, snap in job.planes(warm_start=False)
    ))


def iter_restore_planes(
    task: str, image, *, axes: str | None = None, warm_start: bool = True, **settings
) -> Restoration:
    """Restore a stack plane by plane, yielding ``(index, snapshot)`` as each fit proceeds.

    ``index`` is the plane's position along the iterated axes (``T`` and ``Z`` in the order
    of ``axes``: ``(t, z)`` for ``"TCZYX"``, ``(z,)`` for ``"ZYX"``, ``()`` for a single
    image); the planes come in C order. Each plane's snapshots are those of
    :func:`iter_restore` for that plane: arrays in the plane's layout (``(H, W)``,
    ``(C, H, W)`` or ``(H, W, C)``, Y and X enlarged for super-resolution) and the input's
    dtype, its own automatic stop, the last one ``done=True``. Put the final ones together
    with :meth:`napari_dip.axes.AxesLayout.put` (or call :func:`denoise` & co., which do).

    Parameters
    ----------
    axes : str, optional
        One letter per dimension from ``TZCYX``, e.g. ``"ZYX"``, ``"TYX"``, ``"TCZYX"``
        (:mod:`napari_dip.axes`); ``None`` only for arrays that are not ambiguous (2D,
        ``(H, W, 3 or 4)``, or 3D with ``channel_axis``).
    warm_start : bool
        ``True`` (default): each plane after the first starts from the previous fitted
        plane's network and input, at half the learning rate with a budget of at most
        150 iterations (:func:`~napari_dip.engine.presets.warm_start_config`).
        A fit from a noise input (super-resolution, inpainting, denoising without
        recorruption) builds its picture where that input put it, so a plane whose picture
        has moved more than :data:`~napari_dip.engine.presets.WARM_START_MAX_DRIFT` pixels
        from the first plane of its warm-start chain (measured by
        :func:`napari_dip.drift.picture_shift`) is fitted from scratch, and a new chain
        begins there. ``False``: every plane is an independent fit with the full settings.
    settings
        Those of :func:`iter_restore` (``mask``, ``factor``, ``preset``, ``iterations``,
        ``seed``, ``snapshot_every``, ...). ``mask`` is ``(Y, X)`` (or one plane's shape
        with channels) for every plane, or one per plane: the stack's shape without the
        channel axis (or with it, one per channel). ``seed=None`` draws one seed for the
        whole stack.

    The planes share one value range per channel, the whole stack's, so they are restored
    on one scale. A plane that is constant inside a varying stack, and for inpainting with
    one mask per plane a plane without holes, is not fitted but copied through (enlarged
    by pixel repetition for super-resolution): its one snapshot has ``iteration=0`` and
    ``stop_reason`` ``"constant"`` or ``"no holes"``, and the next fitted plane starts from
    the last fitted one. The first and last snapshot of each plane carry
    ``settings["plane"]`` (index, number, count) and ``settings["warm_start"]``
    (``{"from": index, "from_plane": number}`` of the plane it started from, or ``None``);
    where the drift was measured, ``settings["drift"]`` (``pixels``, ``match``, ``from_plane``
    and the limits) and, on a plane fitted afresh for it, ``settings["warm_start_restarted"]``.
    Leave the array unchanged while the stream runs: planes are read as they come.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> stack = np.stack([data.camera()[:32, :32], data.camera()[32:64, :32]])
    >>> for index, snap in iter_restore_planes("denoise", stack, axes="ZYX", preset="fast", iterations=4,
    ...                                         snapshot_every=None):
    ...     print(index, snap.average.shape, snap.settings["warm_start"])
    (0,) (32, 32) None
    (1,) (32, 32) {'from': [0], 'from_plane': 0}
    """
    job = _Job(task, image, axes=axes, **settings)
    return Restoration.of(job, job.planes(warm_start=warm_start))


class Restoration(Generator):
    """The snapshots of a restoration, as :func:`iter_restore`, :func:`iter_restore_planes`
    and :func:`~napari_dip.volumes.iter_restore_volumes` return them: iterate it, as the
    generator it wraps (``close()`` cancels the fit). What was settled before the first
    step can be read before iterating: ``settings``, a copy of what every snapshot's
    ``settings`` starts with (the preset it resolved to, the noise model,
    ``recorruption_note``, ...), ``recorrupts``, whether the fits denoise by
    recorruption, and ``iterations``, the budget of a (first) fit: the caller's, or the
    resolved preset's.

    >>> from skimage import data
    >>> stream = iter_restore("denoise", data.camera()[:32, :32], preset="fast", iterations=2)
    >>> stream.recorrupts, stream.settings["preset"], stream.iterations
    (True, 'fast', 2)
    >>> stream.close()
    """

    def __init__(self, snapshots: Iterator, settings: dict, recorrupts: bool, iterations: int):
        self._snapshots = snapshots
        self.settings = settings
        self.recorrupts = recorrupts
        self.iterations = iterations

    def send(self, value):
        if value is None or not hasattr(self._snapshots, "send"):
            return next(self._snapshots)
        return self._snapshots.send(value)

    def throw(self, typ, value=None, traceback=None):
        if not hasattr(self._snapshots, "throw"):
            raise typ if value is None else value
        if value is None and traceback is None:
            return self._snapshots.throw(typ)
        return self._snapshots.throw(typ, value, traceback)

    def close(self) -> None:
        close = getattr(self._snapshots, "close", None)
        if close is not None:
            close()

    @classmethod
    def of(cls, job: "_Job", snapshots: Iterator) -> "Restoration":
        # A copy: what the caller does to it must not reach the snapshots' records.
        return cls(snapshots, copy.deepcopy(job.description), job.fit_config.recorrupt_sigma is not None,
                   job.fit_config.iterations)


@dataclass
class _Plane:
    """One plane, prepared for the engine."""

    image: np.ndarray  # the user's plane (a view of the input)
    observed: np.ndarray  # (C, H, W) float32 in [0, 1]
    layout: ImageLayout
    alpha: np.ndarray | None
    forward_model: ForwardModel
    known: np.ndarray | None  # inpainting: (1 or C, H, W), nonzero = known

    @property
    def constant(self) -> bool:
        flat = self.observed.reshape(self.observed.shape[0], -1)
        return bool((flat.max(axis=1) == flat.min(axis=1)).all())


class _Job:
    """One call's input, checked before any fit starts, and its settings; makes the fits
    of :func:`iter_restore` (:meth:`single`) and :func:`iter_restore_planes` (:meth:`planes`)."""

    def __init__(
        self,
        task: str,
        image,
        *,
        axes: str | None = None,
        channel_axis: int | None = None,
        mask=None,
        mask_marks: str = "holes",
        keep_known: bool = True,
        factor: int | None = None,
        preset: str = DEFAULT_PRESET,
        snapshot_every: int | None = 100,
        snapshot_seconds: float | None = None,
        seed: int | None = 0,
        device: str = "auto",
        stopping: str | StoppingConfig | None = None,
        patience: int | None = None,
        channels: int | None = None,
        network: SkipNetConfig | None = None,
        single: bool = False,
        noise: str = "auto",
        noise_fit: str | None = None,
        gain: float | None = None,
        offset: float | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        recorrupt: bool | None = None,
        **fit_overrides,
    ):
        # When the user asked: the first time-based snapshot counts from here.
        self._called_at: float | None = time.perf_counter()
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; choose one of {TASKS}")
        if task != "inpaint" and mask is not None:
            raise InputError(f"a mask is only used for inpainting, not for {task!r}")
        if task != "super-resolve" and factor is not None:
            raise InputError(f"a factor is only used for super-resolution, not for {task!r}")
        self.task, self.factor, self.mask_marks, self.keep_known = task, factor, mask_marks, keep_known
        self.snapshot_every, self.snapshot_seconds = snapshot_every, snapshot_seconds
        self.image = np.asarray(image)
        self.layout = layout = layout_for(self.image.shape, axes, channel_axis)
        if single and layout.planes != 1:
            raise InputError(
                f"the image is a stack of {layout.planes} planes ({layout.describe()}); iter_restore restores one: "
                "use iter_restore_planes to stream a stack plane by plane, or denoise, super_resolve or inpaint"
            )
        if layout.planes == 0 or self.image.size == 0:
            raise InputError(f"the image is empty ({layout.describe()})")
        self.value_range = None
        if layout.is_stack:
            # One range for the whole stack: planes stay comparable, and a constant plane
            # among varying ones is no reason to refuse the stack.
            alpha = layout.plane_axes == "YXC" and layout.channels == 4
            self.value_range = value_range(self.image, layout.channel_axis, 3 if alpha else None)

        self.mask, self.mask_per_plane, self.no_holes = None, False, set()
        if task == "inpaint":
            if mask is None:
                raise InputError("inpainting needs a mask (nonzero = hole to fill)")
            self.mask = np.asarray(mask)
            if layout.is_stack:
                self.mask_per_plane = layout.mask_kind(self.mask.shape) == "per plane"

        first_index = next(layout.indices())
        if task == "inpaint" and layout.is_stack:
            self._check_masks(first_index)
        # Prepared now, so that a bad image fails before anything runs; used by the first fit.
        first = None if first_index in self.no_holes else self._prepare(first_index, warn_inverted=not layout.is_stack)
        self._first = first

        samples, sampled_planes = None, []
        if task == "inpaint":
            noise_sigma = None  # holes are not noise: an estimate there would measure the mask's edges
        elif layout.is_stack:
            noise_sigma, samples, sampled_planes = self._stack_noise(first_index, first)
        else:
            noise_sigma = estimate_noise(first.observed)
        self.noise = self._plan_noise(first, noise, noise_fit, gain, offset, samples)
        if self.noise.poisson:
            # The input jitter follows the noise of what is fitted (for the transform: its
            # stabilised level), not the Gaussian estimate of the raw values.
            noise_sigma = self.noise.jitter_sigma(first.observed if samples is None else samples)
        self.resolved_preset = resolve_preset(preset, device)
        # Whether the preset would recorrupt this fit if nothing below says otherwise.
        would_recorrupt = recorrupt is None and recorrupts_by_default(
            task, preset, fit_overrides.get("reg_noise_std") is not None)
        recorrupt_note = None
        if self.noise.fit == "weighted":
            if recorrupt:
                raise InputError(
                    "recorruption needs noise of one level; noise_fit='weighted' has a level per pixel: "
                    "use noise_fit='gat' (the transform makes the level one)"
                )
            if would_recorrupt:
                recorrupt_note = "off: noise_fit='weighted' has a noise level per pixel"
            recorrupt, would_recorrupt = False, False
        # Photon-limited images are recorrupted too, through the transform at its noise
        # level: on 128² crops of nine FMD images +0.39 dB on the mean (-0.42 to +1.14)
        # and 2.7x sooner than the paper's way (BENCHMARKS.md, "Seventh session").
        if would_recorrupt and first is not None:
            # Fresh white noise does not imitate noise correlated between neighbours (a
            # camera's demosaicing, a microscope's resampling): there the paper's way.
            import torch

            correlation = neighbour_noise_correlation(torch.as_tensor(first.observed)[None])
            if correlation > CORRELATED_NOISE:
                recorrupt = False
                recorrupt_note = f"off: the noise is correlated between neighbours ({correlation:.2f})"
        if would_recorrupt and recorrupt is None and not (noise_sigma or 0) > 0:
            recorrupt_note = "off: no noise was found in the image to recorrupt with"
        self.net, fit_config = settings_for(
            task,
            preset,  # as asked for: auto recorrupts whichever network it resolves to
            factor=factor,
            channels=channels,
            network=network,
            stopping=stopping,
            patience=patience,
            noise_sigma=noise_sigma,
            recorrupt=recorrupt,
            photon_limited=self.noise.poisson,
            device=device,
            **fit_overrides,
        )
        # Memory and tiles are sized on the preset's network as if not recorrupting (the
        # larger one): what the command line and the widget say before the fit, when whether
        # it recorrupts is not yet known, then holds.
        self.sizing_net = self.net if network is not None else network_for(task, self.resolved_preset,
                                                                           channels=channels)
        if seed is None and layout.is_stack:
            seed = secrets.randbelow(2**31)  # one seed for every plane, recorded with each
        self.fit_config = replace(fit_config, seed=seed)  # None is meaningful here: draw a seed
        low, high = self.value_range or (first.layout.low, first.layout.high)
        self.description = {
            "napari_dip": __version__,
            "task": task,
            "preset": self.resolved_preset,
            "preset_requested": preset,
            "factor": factor,
            "noise_sigma_estimate": noise_sigma,
            "noise": self._noise_record(sampled_planes, samples),
            # Why a denoising fit that the preset would have recorrupted was not (None: it
            # was, or the caller or the preset chose the paper's way).
            "recorruption_note": recorrupt_note,
            "input": {
                "shape": list(layout.shape),
                "dtype": str(self.image.dtype),
                "axes": layout.axes,
                # Single images: where the engine found the channels (0, 2), as always.
                "channel_axis": first.layout.channel_axis if not layout.is_stack else layout.channel_axis,
                "value_range": [list(low), list(high)],
            },
        }
        if task == "inpaint":
            self.description.update(mask_marks=mask_marks, keep_known=bool(keep_known))
        # Sized on a plane that is fitted: with one mask per plane, the first may have no holes.
        sized = first or self._prepare(next(i for i in layout.indices() if i not in self.no_holes))
        self.tiles = self._plan_tiles(sized, tile_size, tile_overlap)
        if self.tiles is not None:
            # Refused now, before anything runs, for a stack as for a single image.
            if self.noise.fit == "weighted":
                raise InputError("tiles are fitted with the squared error: use noise_fit='gat' for a tiled fit")
            self.description["tiling"] = self.tiles.to_dict()

    def _plan_noise(self, plane: _Plane | None, noise, noise_fit, gain, offset, samples=None) -> NoisePlan:
        """The noise model of every plane (:func:`~napari_dip.noise_model.plan_noise`): of a
        stack, estimated on ``samples`` pooled from planes across it (:meth:`_stack_noise`),
        else on the image."""
        if self.task != "denoise":
            if noise not in ("auto", "gaussian") or gain is not None or offset is not None or noise_fit is not None:
                raise InputError(f"noise models, gain and offset are for denoising, not for {self.task!r}")
            return NoisePlan("gaussian", None, noise, choice_reason=f"{self.task}: Gaussian")
        low, high = self.value_range or (plane.layout.low, plane.layout.high)
        # plan_noise estimates each channel on chw[c]: a (planes, h, w) block is pooled.
        observed = plane.observed if samples is None else samples
        return plan_noise(observed, low, high, noise=noise, fit=noise_fit, gain=gain, offset=offset)

    def _noise_record(self, sampled_planes: list, samples) -> dict:
        """The noise model's record, and for a stack the planes its estimate pooled."""
        record = self.noise.describe()
        if sampled_planes and self.noise.levels:
            record["estimated_on"] = {
                "planes": [list(index) for index in sampled_planes],
                "axes": self.layout.iterated,
                "plane_region_shape": list(samples.shape[-2:]),
            }
        return record

    def _plan_tiles(self, plane: _Plane, tile_size: int | None, overlap: int | None):
        """The tiles every plane is restored in (:func:`~napari_dip.engine.tiling.plan_tiles`), or ``None``."""
        channels, height, width = plane.observed.shape
        return plan_fit_tiles(self.sizing_net, channels, height, width, factor=self.factor or 1, runs=self.fit_config.runs,
                              device=self.fit_config.device, tile_size=tile_size, overlap=overlap)

    def _fitter(self, plane: _Plane, config, state=None):
        """The fit of one plane: a :class:`Fitter`, or a :class:`TiledFit` over :attr:`tiles`."""
        observed = self.noise.fit_input(plane.observed)
        if self.tiles is not None:
            every_tile = self.snapshot_every is not None or self.snapshot_seconds is not None
            return TiledFit(observed, plane.forward_model, self.net, config, self.tiles, every_tile)
        return Fitter(observed, plane.forward_model, self.net, config, initial_state=state,
                      loss=self.noise.loss(observed))

    # -- planes ------------------------------------------------------------------------

    def _prepare(self, index: tuple[int, ...], warn_inverted: bool = False) -> _Plane:
        layout = self.layout
        image = layout.plane(self.image, index)
        try:
            observed, image_layout, alpha = prepare_image(
                image, layout.plane_channel_axis, value_range=self.value_range
            )
            mask = None
            if self.mask is not None:
                mask = layout.mask_plane(self.mask, index) if layout.is_stack else self.mask
            forward_model = forward_model_for(
                self.task, image_layout, mask=mask, factor=self.factor, mask_marks=self.mask_marks,
                warn_inverted=warn_inverted,
            )
        except InputError as error:
            if not layout.is_stack or layout.planes == 1:
                raise
            raise type(error)(f"plane {layout.plane_name(index)}: {error}") from error
        # Read before the fitter moves the model to its device.
        known = forward_model.known[0].numpy().copy() if self.task == "inpaint" else None
        return _Plane(image, observed, image_layout, alpha, forward_model, known)

    def _check_masks(self, first_index: tuple[int, ...]) -> None:
        """Every plane's mask, before the first fit starts; one warning for the stack if
        the masks look inverted. With one mask per plane, a plane without holes is left
        as it is (:attr:`no_holes`), as long as some plane has holes."""
        layout = self.layout
        _, image_layout, _ = prepare_image(
            layout.plane(self.image, first_index), layout.plane_channel_axis, value_range=self.value_range
        )
        indices = list(layout.indices()) if self.mask_per_plane else [first_index]
        fractions = []
        for index in indices:
            mask = layout.mask_plane(self.mask, index)
            try:
                if self.mask_per_plane and mask.dtype.kind in "biuf" and _marks_no_hole(mask, self.mask_marks):
                    self.no_holes.add(index)
                    fractions.append(0.0)
                    continue
                known = prepare_mask(mask, image_layout, self.mask_marks, warn_inverted=False)
            except InputError as error:
                if len(indices) == 1:
                    raise
                raise InputError(f"plane {layout.plane_name(index)}: {error}") from error
            fractions.append(1.0 - float(known.mean()))
        if len(self.no_holes) == len(indices):
            if self.mask_marks == "holes":
                raise InputError("the mask marks no pixel to fill (nonzero = hole) in any plane; paint the holes first")
            raise InputError("the mask marks every pixel of every plane as known (nonzero = known): there is no hole")
        warn_if_inverted(float(np.mean(fractions)), self.mask_marks)

    def _stack_noise(self, first_index: tuple[int, ...], first: _Plane | None) -> tuple:
        """The noise level of a stack: the median of up to :data:`NOISE_SAMPLE_PLANES`
        evenly spaced planes' estimates (constant planes left out), so that every plane
        is fitted with the same settings. For denoising also those planes' centres, stacked
        ``(C, planes, h, w)``, for the noise model's estimate: a stack whose first plane is
        dark or flat still shows how the variance grows with the signal in the others.
        Each centre is cut to keep the pooled pixels within :data:`NOISE_SAMPLE_PIXELS` (or
        one plane's). Returns ``(sigma, samples or None, the sampled planes' indices)``."""
        indices = list(self.layout.indices())
        spaced = np.linspace(0, len(indices) - 1, min(len(indices), NOISE_SAMPLE_PLANES))
        picks = sorted({int(i) for i in spaced.round()})
        sigmas, crops, sampled = [], [], []
        region = None
        for pick in picks:
            plane = first if indices[pick] == first_index and first is not None else self._prepare(indices[pick])
            if plane.constant:
                continue
            sigmas.append(estimate_noise(plane.observed))
            if self.task == "denoise":
                region = region or _centre_region(plane.observed.shape[-2:], len(picks))
                crops.append(np.array(plane.observed[:, region[0], region[1]], copy=True))
                sampled.append(indices[pick])
        samples = np.stack(crops, axis=1) if crops else None
        return (float(np.median(sigmas)) if sigmas else 0.0), samples, sampled

    # -- fits --------------------------------------------------------------------------

    def _every(self, config) -> int:
        return config.iterations if self.snapshot_every is None else self.snapshot_every

    def _take_call_start(self) -> float | None:
        """When the call began, handed to its first fit only (``Fitter.run``'s ``since``):
        that fit's first picture comes ``snapshot_seconds`` after the call, set-up
        included. Taking it clears it, so the fits after it get ``None``."""
        called_at, self._called_at = self._called_at, None
        return called_at

    def _user_snapshots(self, fitter: Fitter, plane: _Plane, description: dict) -> Iterator[Snapshot]:
        keep = None
        if plane.known is not None:
            description = {**description, "hole_fraction": round(1.0 - float(plane.known.mean()), 6)}
            if self.keep_known:
                # A copy: the caller may change its array while the fit runs.
                keep = (np.array(plane.image, copy=True), plane.known)
        snapshots = fitter.run(self._every(fitter.config), self.snapshot_seconds, self._take_call_start())
        return _in_user_layout(snapshots, plane.layout, plane.alpha, description, keep, self.noise)

    def single(self) -> Iterator[Snapshot]:
        """The fit of a single image (no T or Z axis)."""
        plane, self._first = self._first, None
        return self._user_snapshots(self._fitter(plane, self.fit_config), plane, self.description)

    def planes(self, warm_start: bool = True) -> Iterator[tuple[tuple[int, ...], Snapshot]]:
        """The planes' fits in turn, each plane after the first fitted one warm-started
        from it when ``warm_start``, unless its picture drifted off its chain's first plane."""
        layout = self.layout
        warm_config = warm_start_config(self.fit_config)
        state = source = None  # the last fitted plane's network and input, and which plane
        anchor = None  # the observation (and mask) the warm-start chain began on, and its number
        count = layout.planes
        for number, index in enumerate(layout.indices()):
            description = {
                **self.description,
                "plane": {"index": list(index), "axes": layout.iterated, "number": number, "count": count},
                "warm_start": None,
            }
            if index in self.no_holes:
                yield index, self._copied_snapshot(layout.plane(self.image, index), "no holes", description)
                continue
            if number == 0:
                plane, self._first = self._first, None
            else:
                plane = self._prepare(index)
            if plane.constant:
                yield index, self._copied_snapshot(plane.image, "constant", description)
                continue
            config = self.fit_config
            if warm_start and state is not None and self.tiles is None:
                drift = self._drift(*anchor[0], plane)
                if drift is not None:
                    description["drift"] = {**drift, "from_plane": anchor[1],
                                            "restart_above_pixels": presets.WARM_START_MAX_DRIFT,
                                            "restart_from_match": presets.WARM_START_MIN_MATCH}
                if drift is not None and drift["pixels"] > presets.WARM_START_MAX_DRIFT \
                        and drift["match"] >= presets.WARM_START_MIN_MATCH:
                    # The picture has moved off where the chain's noise input put it: start afresh.
                    state = None
                    description["warm_start_restarted"] = True
                else:
                    config = warm_config
                    description["warm_start"] = {"from": list(source[0]), "from_plane": source[1]}
            if config is self.fit_config and warm_start and self.tiles is None:
                # What the drift is measured against: the observation only, not the plane.
                anchor = ((plane.observed, plane.known), number)
            fitter = self._fitter(plane, config, state)
            state = None  # the fitter has its own copy
            snapshots = self._user_snapshots(fitter, plane, description)
            try:
                for snapshot in snapshots:
                    yield index, snapshot
            except FloatingPointError as error:
                if count == 1:
                    raise
                # Say which plane: the one to look at, and to fit alone with other settings.
                where = ", ".join(f"{letter}={i}" for letter, i in zip(layout.iterated, index))
                raise FloatingPointError(f"plane {number + 1} of {count} ({where}): {error}") from error
            finally:
                snapshots.close()
            if warm_start and self.tiles is None:  # tiled planes start afresh: no state spans the tiles
                state, source = fitter.export_state(), (index, number)
            del fitter, plane

    def _drift(self, began: np.ndarray, began_known: np.ndarray | None, plane: _Plane) -> dict | None:
        """How far ``plane``'s picture has moved from the observation ``began`` (with its
        mask ``began_known``, inpainting) the chain began on: ``pixels`` of the result
        along Y or X, whichever is more, and ``match``, the planes' correlation once aligned
        (:func:`napari_dip.drift.picture_shift`); ``None`` where the fit's input is the plane
        itself (recorruption), which moves with the picture."""
        if self.fit_config.recorrupt_sigma is not None:
            return None
        from .drift import picture_shift

        shift = picture_shift(began, plane.observed, began_known, plane.known)
        return {"pixels": round(shift.largest * (self.factor or 1), 2), "match": round(shift.match, 3)}

    def _copied_snapshot(self, image: np.ndarray, reason: str, description: dict) -> Snapshot:
        """The final snapshot of a plane that is not fitted, because it is constant inside
        a varying stack or (inpainting, one mask per plane) has no holes: the plane itself,
        each pixel repeated ``factor`` times along Y and X for super-resolution (exact
        for a constant plane). ``stop_reason`` is ``reason``."""
        result = np.array(image, copy=True)
        f = self.factor or 1
        if f > 1:
            axes = self.layout.plane_axes
            result = np.repeat(np.repeat(result, f, axis=axes.index("Y")), f, axis=axes.index("X"))
        return Snapshot(
            iteration=0,
            iterations=0,
            loss=0.0,
            output=result,
            average=result.copy(),
            elapsed=0.0,
            done=True,
            stop_reason=reason,
            expected_stop=0,
            settings={**description, "copied": reason},
        )


def _marks_no_hole(mask, marks: str) -> bool:
    """True when a mask plane marks no hole: all zero (``marks="holes"``) or all nonzero."""
    marked = np.asarray(mask) != 0
    return not marked.any() if marks == "holes" else bool(marked.all())


def forward_model_for(
    task: str,
    layout: ImageLayout,
    mask=None,
    factor: int | None = None,
    mask_marks: str = "holes",
    warn_inverted: bool = True,
) -> ForwardModel:
    """The degradation model of a task for an image of this layout."""
    if task == "inpaint":
        if mask is None:
            raise InputError("inpainting needs a mask (nonzero = hole to fill)")
        return KnownPixels(prepare_mask(mask, layout, marks=mask_marks, warn_inverted=warn_inverted))
    if task == "super-resolve":
        if factor is None:
            raise InputError("super-resolution needs a factor (2, 3, 4 or 8)")
        return LanczosDownsampler(factor, layout.channels)
    return Identity()


#: The median absolute value of standard normal noise (its 75th percentile): the divisor
#: that turns the wavelet details' median magnitude into a standard deviation.
_NORMAL_MEDIAN_ABSOLUTE = NormalDist().inv_cdf(0.75)


def estimate_noise(chw: np.ndarray) -> float:
    """Standard deviation of Gaussian noise in a normalised ``(C, H, W)`` image, averaged
    over channels: the median magnitude of each channel's finest diagonal wavelet details
    (Daubechies 2), as :func:`skimage.restoration.estimate_sigma` measures it.

    PyWavelets directly rather than scikit-image's function: importing
    ``skimage.restoration`` imports ``scipy.stats``, almost a second on a 2-core CPU before
    a command's or a napari session's first fit can show anything. A test holds the two
    equal.

    Constant channels count as noise-free, and so does a channel the estimate has no
    detail to measure on (a flat synthetic image).

    >>> rng = np.random.default_rng(0)
    >>> round(estimate_noise(0.5 + rng.normal(0, 0.1, (1, 128, 128))), 2)
    0.1
    """
    import pywt

    values = np.asarray(chw, np.float64)
    total = 0.0
    for channel in values:
        if not channel.max() > channel.min():
            continue
        details = pywt.dwtn(channel, wavelet="db2")["dd"]
        # Details exactly zero are flat areas (a saturated or synthetic region), not noise.
        details = details[details != 0]
        if details.size:
            total += float(np.median(np.abs(details))) / _NORMAL_MEDIAN_ABSOLUTE
    return total / values.shape[0]


def _in_user_layout(
    snapshots, layout, alpha, description, keep=None, noise: NoisePlan | None = None
) -> Iterator[Snapshot]:
    to_image = noise.to_image if noise is not None else (lambda chw: chw)

    def user(chw):
        result = restore_layout(to_image(chw), layout, alpha)
        if keep is not None:
            original, known = keep
            result = keep_known_pixels(result, original, known, layout)
        return result

    for snap in snapshots:
        yield replace(
            snap,
            output=user(snap.output),
            average=user(snap.average),
            run_averages=None,
            uncertainty=(
                None if snap.run_averages is None else spread_in_user_units(to_image(snap.run_averages), layout)
            ),
            settings={**description, **snap.settings} if snap.settings else {},
        )


def last_snapshot(snapshots: Iterator[Snapshot]) -> Snapshot:
    """Run a snapshot stream to its end and return the final snapshot (the result)."""
    last = None
    for last in snapshots:  # noqa: B007 - only the last one is wanted
        pass
    return last


def _restore(
    task: str, image, *, axes: str | None, warm_start: bool, return_uncertainty: bool = False,
    return_residual: bool = False, volumetric: bool = False, spacing=None, **settings,
):
    """The whole result: of one image through :func:`iter_restore`, of a stack assembled
    from :func:`iter_restore_planes`' final snapshots; with ``return_uncertainty``,
    ``(result, uncertainty)``, the runs' per-pixel standard deviation (``runs`` >= 2); with
    ``return_residual`` (denoising) the residual after them
    (:func:`napari_dip.residual.noise_residual`).
    ``volumetric=True`` fits each Z-stack at once with a 3D network
    (:func:`napari_dip.volumes.restore_volumes`, ``spacing`` ``(z, y, x)``)."""
    if return_residual and task != "denoise":
        raise InputError(f"the residual is the noise a denoising removed; it is not offered for {task!r}")
    if volumetric:
        if return_uncertainty:
            raise InputError("the uncertainty needs several runs, which 3D restoration does not offer")
        from .volumes import restore_volumes

        final_settings: dict = {}
        result = restore_volumes(task, image, axes=axes, spacing=spacing, settings_out=final_settings, **settings)
        if not return_residual:
            return result
        return result, noise_residual(image, result, final_settings.get("noise"), axes=final_settings.get("axes"))
    if spacing is not None:
        raise InputError("spacing is used by the 3D network only: give volumetric=True with it")
    settings["snapshot_every"] = None
    if return_uncertainty and (settings.get("runs") or 1) < 2:
        raise InputError("the uncertainty is the spread of several runs: give runs=2 or more with return_uncertainty")
    layout = layout_for(np.shape(image), axes, settings.get("channel_axis"))
    if not layout.is_stack:
        final = last_snapshot(iter_restore(task, image, axes=axes, **settings))
        result, uncertainty, record = final.average, final.uncertainty, final.settings
    else:
        stream = iter_restore_planes(task, image, axes=axes, warm_start=warm_start, **settings)
        finals = [(index, snapshot) for index, snapshot in stream if snapshot.done]
        result = layout.assemble(((i, s.average) for i, s in finals), np.asarray(image).dtype, settings.get("factor"))
        # Every fitted plane has the stack's noise model; a plane copied through has none.
        record = next((s.settings for _, s in finals if not s.settings.get("copied")), finals[-1][1].settings)
        uncertainty = None
        if return_uncertainty:
            # A plane copied through (constant) has no runs: its spread is 0.
            spreads = (
                (i, np.zeros(s.average.shape, np.float32) if s.uncertainty is None else s.uncertainty)
                for i, s in finals
            )
            uncertainty = layout.assemble(spreads, np.float32, settings.get("factor"))
    outputs = [result]
    if return_uncertainty:
        outputs.append(uncertainty)
    if return_residual:
        outputs.append(noise_residual(image, result, record.get("noise"), axes=layout.axes))
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def denoise(
    image,
    *,
    axes: str | None = None,
    warm_start: bool = True,
    preset: str = DEFAULT_PRESET,
    seed: int | None = 0,
    device: str = "auto",
    return_uncertainty: bool = False,
    return_residual: bool = False,
    **settings,
):
    """Remove noise from ``image`` with a deep image prior.

    Returns the exponential average of the network outputs at the iteration the automatic
    stopping rule picks (or after the whole budget with ``stopping="none"``), with the
    input's shape, dtype and value range. ``settings`` are those of :func:`iter_restore`
    (``iterations``, ``learning_rate``, ``channels``, ``stopping``, ``runs``, ...).

    A stack (``axes`` with ``Z`` or ``T``, e.g. ``"ZYX"``, ``"TCZYX"``) is restored plane by
    plane, each plane warm-started from the previous one unless ``warm_start=False``
    (:func:`iter_restore_planes`).

    ``noise`` (``"auto"``, ``"gaussian"``, ``"poisson-gaussian"``), ``noise_fit``, ``gain``
    and ``offset`` choose the noise model (:func:`iter_restore`). With ``runs=K`` (K >= 2)
    and ``return_uncertainty=True`` the result is ``(restored, uncertainty)``: the per-pixel
    standard deviation of the K runs' results, float32 in the image's units.

    With ``return_residual=True`` the residual comes last, ``(restored, residual)`` or
    ``(restored, uncertainty, residual)``: the observation minus the restoration in the
    noise model's units, float32 with the image's shape (stacks and 3D too), as the command
    line's ``--residual`` writes it (:func:`napari_dip.residual.noise_residual`): in the
    image's units under the Gaussian model, divided by the model's standard deviation
    ``sqrt(a * (restored - offset) + b)`` under the Poisson-Gaussian one (unit variance
    where the model holds). A good restoration leaves structure-free noise there.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> noisy = data.camera()[:64, :64]
    >>> denoise(noisy, preset="fast", iterations=5).shape
    (64, 64)
    >>> denoise(np.stack([noisy, noisy.T]), axes="ZYX", preset="fast", iterations=5).shape
    (2, 64, 64)
    >>> restored, residual = denoise(noisy, noise="gaussian", preset="fast", iterations=5, return_residual=True)
    >>> residual.dtype, bool(np.allclose(residual, noisy.astype(np.float32) - restored))  # in grey levels
    (dtype('float32'), True)
    """
    return _restore("denoise", image, axes=axes, warm_start=warm_start, preset=preset, seed=seed, device=device,
                    return_uncertainty=return_uncertainty, return_residual=return_residual, **settings)


def super_resolve(
    image,
    factor: int = 4,
    *,
    axes: str | None = None,
    warm_start: bool = True,
    preset: str = DEFAULT_PRESET,
    seed: int | None = 0,
    device: str = "auto",
    **settings,
) -> np.ndarray:
    """Upscale ``image`` by an integer ``factor`` (2, 3, 4 or 8) with a deep image prior.

    The network's output is fitted so that, downsampled with a Lanczos-2 anti-aliasing
    kernel, it matches ``image``. The result is ``factor`` times larger on each side (Y and
    X of every plane of a stack; ``axes`` and ``warm_start`` as for :func:`denoise`).

    Examples
    --------
    >>> from skimage import data
    >>> super_resolve(data.camera()[:32, :48], 2, preset="fast", iterations=5).shape
    (64, 96)
    """
    return _restore(
        "super-resolve", image, axes=axes, warm_start=warm_start, factor=factor, preset=preset, seed=seed,
        device=device, **settings,
    )


def inpaint(
    image,
    mask,
    *,
    axes: str | None = None,
    warm_start: bool = True,
    preset: str = DEFAULT_PRESET,
    seed: int | None = 0,
    device: str = "auto",
    **settings,
) -> np.ndarray:
    """Fill the pixels of ``image`` where ``mask`` is nonzero with a deep image prior.

    Holes are filled by the network; the known pixels are returned exactly as they are in
    ``image`` (``keep_known=False`` returns the network's whole image instead). ``mask``
    is ``(H, W)`` for every channel or has the image's own shape for one mask per channel;
    nonzero marks a hole, or a known pixel with ``mask_marks="known"``. For a stack
    (``axes`` as for :func:`denoise`) ``(H, W)`` serves every plane, and the stack's shape
    without (or with) its channel axis gives one mask per plane.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> image = data.camera()[:64, :64]
    >>> holes = np.zeros(image.shape, bool); holes[20:30, 20:30] = True
    >>> inpaint(image, holes, preset="fast", iterations=5).dtype
    dtype('uint8')
    """
    return _restore(
        "inpaint", image, axes=axes, warm_start=warm_start, mask=mask, preset=preset, seed=seed, device=device,
        **settings,
    )
