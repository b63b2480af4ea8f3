"""Public API: numpy in, numpy out, in the style of ``skimage.restoration``.

``denoise``, ``super_resolve`` and ``inpaint`` return the finished restoration;
``iter_restore`` is the streaming form a GUI or a progress bar consumes, yielding
:class:`~napari_dip.engine.fit.Snapshot` objects whose arrays already have the input's layout,
dtype and value range.

Inpainting returns the observed pixels exactly as they were and takes only the holes from
the network (``keep_known=True``): the network reproduces known pixels closely but not
exactly, and a user who filled holes expects the rest of the image untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from . import __version__
from .arrays import ImageLayout, keep_known_pixels, prepare_image, prepare_mask, restore_layout
from .errors import InputError
from .engine.fit import Fitter, Snapshot
from .engine.forward import ForwardModel, Identity, KnownPixels, LanczosDownsampler
from .engine.networks import SkipNetConfig
from .engine.presets import DEFAULT_PRESET, TASKS, resolve_preset, settings_for
from .engine.stopping import StoppingConfig


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
    threads: int | None = None,
) -> Iterator[Snapshot]:
    """Restore ``image`` step by step, yielding snapshots as the fit proceeds.

    Parameters
    ----------
    task : {"denoise", "super-resolve", "inpaint"}
    image : ndarray
        2D grey, channels-last RGB/RGBA, or channel-first multichannel; uint8, uint16 or
        float. See :mod:`napari_dip.arrays` for how values are normalised.
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
        instead of 128 channels per scale, practical on a CPU; ``auto`` (default) is
        ``paper`` on a CUDA GPU and ``fast`` otherwise. The settings record both
        (``preset``, ``preset_requested``).
    snapshot_every : int or None
        Yield a snapshot every this many iterations; ``None`` yields only the final one.
        Snapshots copy from the device, so fewer is faster.
    snapshot_seconds : float, optional
        Also yield a snapshot whenever this many seconds have passed since the last one
        (e.g. 2.0 for a GUI: first feedback quickly even when iterations are slow).
    channel_axis : {None, 0, -1}
        Where the channels are; ``None`` guesses (see :func:`~napari_dip.arrays.guess_channel_axis`).
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
    threads : int, optional
        CPU threads; by default as many as there are idle cores when the fit starts, so a
        busy machine is not oversubscribed (recorded as ``settings["threads"]``).

    Yields
    ------
    Snapshot
        The last one has ``done=True``, its ``stop_reason`` and the ``settings`` used; with
        automatic stopping its arrays come from ``best_iteration``.

    Examples
    --------
    >>> from skimage import data
    >>> image = data.camera()[:64, :64]
    >>> for snap in iter_restore("denoise", image, preset="fast", iterations=4, snapshot_every=2):
    ...     print(snap.iteration, snap.average.dtype, snap.average.shape)
    2 uint8 (64, 64)
    4 uint8 (64, 64)
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {TASKS}")
    if task != "inpaint" and mask is not None:
        raise InputError(f"a mask is only used for inpainting, not for {task!r}")
    if task != "super-resolve" and factor is not None:
        raise InputError(f"a factor is only used for super-resolution, not for {task!r}")

    observed, layout, alpha = prepare_image(image, channel_axis)
    forward_model = forward_model_for(task, layout, mask=mask, factor=factor, mask_marks=mask_marks)
    # Read before the fitter moves the model to its device.
    known = forward_model.known[0].numpy().copy() if task == "inpaint" else None
    # Holes (inpainting) are not noise: an estimate there would measure the mask's edges.
    noise_sigma = None if task == "inpaint" else estimate_noise(observed)
    resolved_preset = resolve_preset(preset, device)

    net, fit_config = settings_for(
        task,
        resolved_preset,
        factor=factor,
        channels=channels,
        network=network,
        stopping=stopping,
        patience=patience,
        noise_sigma=noise_sigma,
        iterations=iterations,
        learning_rate=learning_rate,
        reg_noise_std=reg_noise_std,
        average_weight=average_weight,
        device=device,
        precision=precision,
        backtrack=backtrack,
        runs=runs,
        threads=threads,
    )
    fit_config = replace(fit_config, seed=seed)  # None is meaningful here: draw a seed
    fitter = Fitter(observed, forward_model, net, fit_config)
    every = fit_config.iterations if snapshot_every is None else snapshot_every
    description = {
        "napari_dip": __version__,
        "task": task,
        "preset": resolved_preset,
        "preset_requested": preset,
        "factor": factor,
        "noise_sigma_estimate": noise_sigma,
        "input": {
            "shape": list(layout.shape),
            "dtype": str(layout.dtype),
            "channel_axis": layout.channel_axis,
            "value_range": [list(layout.low), list(layout.high)],
        },
    }
    keep = None
    if task == "inpaint":
        description.update(mask_marks=mask_marks, hole_fraction=round(1.0 - float(known.mean()), 6),
                           keep_known=bool(keep_known))
        if keep_known:
            # A copy: the caller may change its array while the fit runs.
            keep = (np.array(image, copy=True), known)
    return _in_user_layout(fitter.run(every, snapshot_seconds), layout, alpha, description, keep)


def forward_model_for(
    task: str, layout: ImageLayout, mask=None, factor: int | None = None, mask_marks: str = "holes"
) -> ForwardModel:
    """The degradation model of a task for an image of this layout."""
    if task == "inpaint":
        if mask is None:
            raise InputError("inpainting needs a mask (nonzero = hole to fill)")
        return KnownPixels(prepare_mask(mask, layout, marks=mask_marks))
    if task == "super-resolve":
        if factor is None:
            raise InputError("super-resolution needs a factor (2, 3, 4 or 8)")
        return LanczosDownsampler(factor, layout.channels)
    return Identity()


def estimate_noise(chw: np.ndarray) -> float:
    """Standard deviation of Gaussian noise in a normalised ``(C, H, W)`` image (wavelet
    estimate of :func:`skimage.restoration.estimate_sigma`, averaged over channels).

    Constant channels count as noise-free, and so does a channel the estimate has no
    detail to measure on (a flat synthetic image): there it would divide zero by zero.

    >>> rng = np.random.default_rng(0)
    >>> round(estimate_noise(0.5 + rng.normal(0, 0.1, (1, 128, 128))), 2)
    0.1
    """
    from skimage.restoration import estimate_sigma

    values = np.asarray(chw, np.float64)
    flat = values.reshape(values.shape[0], -1)
    varying = flat.max(axis=1) > flat.min(axis=1)
    if not varying.any():
        return 0.0
    with warnings.catch_warnings():
        # "Mean of empty slice": no nonzero wavelet detail in a channel; counted as 0 below.
        warnings.simplefilter("ignore", RuntimeWarning)
        sigmas = np.asarray(estimate_sigma(values[varying], channel_axis=0, average_sigmas=False), np.float64)
    sigmas = np.where(np.isfinite(sigmas), sigmas, 0.0)
    return float(sigmas.sum() / values.shape[0])


def _in_user_layout(snapshots, layout, alpha, description, keep=None) -> Iterator[Snapshot]:
    def user(chw):
        result = restore_layout(chw, layout, alpha)
        if keep is not None:
            original, known = keep
            result = keep_known_pixels(result, original, known, layout)
        return result

    for snap in snapshots:
        yield replace(
            snap,
            output=user(snap.output),
            average=user(snap.average),
            settings={**description, **snap.settings} if snap.settings else {},
        )


def last_snapshot(snapshots: Iterator[Snapshot]) -> Snapshot:
    """Run a snapshot stream to its end and return the final snapshot (the result)."""
    last = None
    for last in snapshots:  # noqa: B007 - only the last one is wanted
        pass
    return last


def _final(snapshots: Iterator[Snapshot]) -> np.ndarray:
    return last_snapshot(snapshots).average


def denoise(image, *, preset: str = DEFAULT_PRESET, seed: int | None = 0, device: str = "auto", **settings) -> np.ndarray:
    """Remove noise from ``image`` with a deep image prior.

    Returns the exponential average of the network outputs at the iteration the automatic
    stopping rule picks (or after the whole budget with ``stopping="none"``), with the
    input's shape, dtype and value range. ``settings`` are those of :func:`iter_restore`
    (``iterations``, ``learning_rate``, ``channels``, ``stopping``, ``runs``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> noisy = data.camera()[:64, :64]
    >>> denoise(noisy, preset="fast", iterations=5).shape
    (64, 64)
    """
    return _final(iter_restore("denoise", image, preset=preset, seed=seed, device=device, snapshot_every=None, **settings))


def super_resolve(
    image, factor: int = 4, *, preset: str = DEFAULT_PRESET, seed: int | None = 0, device: str = "auto", **settings
) -> np.ndarray:
    """Upscale ``image`` by an integer ``factor`` (2, 3, 4 or 8) with a deep image prior.

    The network's output is fitted so that, downsampled with a Lanczos-2 anti-aliasing
    kernel, it matches ``image``. The result is ``factor`` times larger on each side.

    Examples
    --------
    >>> from skimage import data
    >>> super_resolve(data.camera()[:32, :48], 2, preset="fast", iterations=5).shape
    (64, 96)
    """
    return _final(
        iter_restore(
            "super-resolve", image, factor=factor, preset=preset, seed=seed, device=device, snapshot_every=None, **settings
        )
    )


def inpaint(image, mask, *, preset: str = DEFAULT_PRESET, seed: int | None = 0, device: str = "auto", **settings) -> np.ndarray:
    """Fill the pixels of ``image`` where ``mask`` is nonzero with a deep image prior.

    Holes are filled by the network; the known pixels are returned exactly as they are in
    ``image`` (``keep_known=False`` returns the network's whole image instead). ``mask``
    is ``(H, W)`` for every channel or has the image's own shape for one mask per channel;
    nonzero marks a hole, or a known pixel with ``mask_marks="known"``.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> image = data.camera()[:64, :64]
    >>> holes = np.zeros(image.shape, bool); holes[20:30, 20:30] = True
    >>> inpaint(image, holes, preset="fast", iterations=5).dtype
    dtype('uint8')
    """
    return _final(
        iter_restore("inpaint", image, mask=mask, preset=preset, seed=seed, device=device, snapshot_every=None, **settings)
    )
