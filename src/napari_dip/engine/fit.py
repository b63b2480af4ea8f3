"""The solver: fit a randomly initialised network to one degraded image.

:class:`Fitter` holds the network, its fixed noise input and the optimiser;
:meth:`Fitter.run` is a generator that performs the Adam steps and yields a
:class:`Snapshot` every ``snapshot_every`` iterations and at the end. A caller cancels by
no longer consuming it (``generator.close()``), which is what a GUI's Stop button does.

Nothing in the loop copies data to the host except at snapshots and at the periodic
backtracking check, so a GPU is never stalled once per iteration: losses go into a
device-side buffer, the running average is updated in place, and the input jitter is
drawn into a preallocated tensor.
"""

from __future__ import annotations

import copy
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .compiled import compile_mode, compile_network
from .devices import (autotune_convolutions, cpu_threads, free_memory_bytes, idle_cores, kernel_platform,
                      resolve_device)
from ..errors import DeviceMemoryError, InputError
from .forward import Identity
from .forward import describe as describe_forward_model
from .graphs import GraphedStep, graphs_wanted
from .losses import SquaredError
from .losses import describe as describe_loss
from .networks import SkipNet, SkipNetConfig, count_parameters
from .networks3d import VolumeNetConfig, VolumeSkipNet
from .stopping import HeldOutPixels, StoppingConfig, WindowedVariance, expected_stop
from .warm import wait_for as wait_for_warm_up

PRECISIONS = ("float32", "bfloat16", "float16")

#: After this many backtracks in a row the fit is declared divergent instead of looping.
MAX_CONSECUTIVE_BACKTRACKS = 20


@dataclass(frozen=True)
class FitConfig:
    """How to fit. Defaults are the paper's denoising settings."""

    iterations: int = 3000
    learning_rate: float = 0.01
    #: Adam's decay of its squared-gradient average (PyTorch's and the paper's 0.999).
    #: Recorrupted fits see a new target at every step; with 0.95 the step size follows
    #: the gradients' current scale instead of that of the last thousand steps, and they
    #: peaked sooner and as high (:data:`~.presets.RECORRUPTION_ADAM_BETA2`).
    adam_beta2: float = 0.999
    #: Standard deviation of the Gaussian jitter added to the input noise at every step.
    reg_noise_std: float = 1.0 / 30.0
    #: Weight of the exponential average of outputs: ``avg = w * avg + (1 - w) * output``,
    #: corrected for its start as Adam corrects its moments (the average of the first ``t``
    #: outputs weighs them ``w ** (t - k)``, divided by the weights' sum).
    average_weight: float = 0.99
    #: Restore the last good weights and optimiser state when the loss jumps, and go on
    #: with half the learning rate.
    backtrack: bool = True
    #: A loss more than this many times the previous one counts as a jump...
    backtrack_ratio: float = 3.0
    #: ...if it also rose by at least this much (mean squared error of values in [0, 1];
    #: 1e-3 is a PSNR of 30 dB). Near convergence on noise-free data (inpainting) the loss
    #: is tiny and fluctuates by large ratios without anything going wrong.
    backtrack_min_rise: float = 1e-3
    #: Iterations between the (host-synchronising) checks for a jump.
    check_every: int = 25
    #: ``None`` draws a fresh seed; the one used is reported in :attr:`Fitter.seed`.
    seed: int | None = 0
    #: Independent fits (seeds ``seed``, ``seed + 1``, ...) whose results are averaged; they
    #: run side by side in one batched pass of a grouped network.
    runs: int = 1
    device: str = "auto"
    #: ``float32``, or mixed precision with ``bfloat16``/``float16`` for the network.
    precision: str = "float32"
    #: Store activations channels-last. Off by default: on an H200 the paper network's step
    #: was slower with it (512²: 16.95 against 14.16 ms eager, 16.60 against 13.75 ms with
    #: CUDA graphs; BENCHMARKS.md "Step variants on a GPU"), and on a 2-core CPU it was
    #: slower for the fast network at 256² (0.26 against 0.22 s per step).
    channels_last: bool = False
    #: CPU threads for the fit: ``None`` keeps PyTorch's setting (the same result for the
    #: same seed on one machine); ``"auto"`` uses as many as there are idle cores when the
    #: fit starts (:func:`napari_dip.engine.devices.cpu_threads`), so a busy machine is not
    #: oversubscribed, at the cost of results that depend on the load. Ignored on GPUs.
    threads: int | str | None = None
    #: Run the network through ``torch.compile`` (inductor), its kernels cached in the user's
    #: cache folder for later runs (:mod:`napari_dip.engine.compiled`). Off: on a 2-core CPU it
    #: gave 1.07-1.14x per step but compiling took 94 s at 128² (BENCHMARKS.md); unmeasured on GPUs.
    compile: bool = False
    #: CUDA only: capture one whole step (forward, loss, backward, Adam update) as a CUDA
    #: graph and replay it (:mod:`napari_dip.engine.graphs`). ``None`` (default): on CUDA,
    #: where it made a paper-network step at 256² 3x faster on an H200 (5.4 against 16.2 ms;
    #: at 512², where the step is bound by the card's arithmetic, 13.8 against 14.2 ms).
    #: Ignored on other devices and in float16.
    cuda_graphs: bool | None = None
    #: Automatic stopping (see :mod:`napari_dip.engine.stopping`); ``StoppingConfig(rule="none")``
    #: runs the whole budget.
    stopping: StoppingConfig = StoppingConfig()
    #: Denoising only: the standard deviation (of the [0, 1] range) of the image's Gaussian
    #: noise, to fit by recorruption (Pang et al., "Recorrupted-to-Recorrupted", CVPR 2021)
    #: instead of the paper's way. The network's input is then the noisy image itself plus
    #: fresh noise ``alpha * n`` at every step, ``n ~ N(0, sigma²)``, and its target the image
    #: minus ``n / alpha``. Input and target carry independent noise, so the squared error is
    #: in expectation the error against the clean image plus a constant: the fit climbs to
    #: its peak in fewer steps and overfits the noise more slowly. ``reg_noise_std`` is not
    #: used then. ``None``: the paper's fixed noise input, fitted to the image.
    recorrupt_sigma: float | None = None
    #: ``alpha`` above: how the fresh noise is split between input and target (1: equally).
    recorrupt_alpha: float = 1.0

    def __post_init__(self):
        if self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.adam_beta2 < 1:
            raise InputError(f"adam_beta2 must be in (0, 1), got {self.adam_beta2}")
        if self.reg_noise_std < 0:
            raise InputError(f"reg_noise_std must be >= 0, got {self.reg_noise_std}")
        if not 0 <= self.average_weight < 1:
            raise InputError(f"average_weight must be in [0, 1), got {self.average_weight}")
        if self.backtrack_ratio <= 1:
            raise InputError(f"backtrack_ratio must be > 1, got {self.backtrack_ratio}")
        if self.check_every < 1:
            raise InputError(f"check_every must be at least 1, got {self.check_every}")
        if self.runs < 1:
            raise InputError(f"runs must be at least 1, got {self.runs}")
        if self.threads is not None and self.threads != "auto" and not (
            isinstance(self.threads, int) and self.threads >= 1
        ):
            raise InputError(f"threads must be a whole number of at least 1, or 'auto', got {self.threads!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.recorrupt_sigma is not None and not self.recorrupt_sigma > 0:
            raise InputError(f"recorrupt_sigma must be positive (or None), got {self.recorrupt_sigma}")
        if not self.recorrupt_alpha > 0:
            raise InputError(f"recorrupt_alpha must be positive, got {self.recorrupt_alpha}")
        for name in ("compile", "cuda_graphs", "channels_last"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name != "compile"):
                allowed = "True or False" if name == "compile" else "True, False or None"
                raise InputError(f"{name} must be {allowed}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitState:
    """What a warm start carries from one fit to the next: weights and the input noise."""

    network: dict
    input: torch.Tensor
    network_config: SkipNetConfig
    channels: int
    runs: int

    def check_compatible(self, network_config: SkipNetConfig, channels: int, runs: int, input_shape: tuple) -> None:
        if (network_config, channels, runs) != (self.network_config, self.channels, self.runs):
            raise InputError("a warm start needs the same network, channels and runs as the fit it comes from")
        if tuple(self.input.shape) != tuple(input_shape):
            raise InputError(
                f"a warm start needs planes of one size: the previous input was {tuple(self.input.shape)[-2:]}, "
                f"this one is {tuple(input_shape)[-2:]}"
            )


@dataclass
class Snapshot:
    """The state of a fit after ``iteration`` steps.

    ``output`` is the network's current image, ``average`` the exponential average of
    outputs (what the task functions return). Arrays are ``(C, H, W)`` float32 in [0, 1]
    from :meth:`Fitter.run`; the public streaming functions convert them to the input's
    layout and dtype.

    With automatic stopping, ``best_iteration`` is the iteration the stopping rule rates
    best so far, and the final snapshot's arrays are the ones from that iteration.
    """

    iteration: int
    iterations: int
    loss: float
    output: np.ndarray
    average: np.ndarray
    elapsed: float
    backtracks: int = 0
    done: bool = False
    #: Set on the final snapshot: ``"budget"`` when all iterations ran, else the name of
    #: the stopping rule that fired (``"wmv"``, ``"validation"``).
    stop_reason: str | None = None
    best_iteration: int | None = None
    #: The iteration the fit is expected to end at (:func:`~napari_dip.engine.stopping.expected_stop`:
    #: at least the first check after ``best_iteration + patience``, later where the held-out
    #: score is still falling; at most the budget; the budget without a rule). What an
    #: ETA should count down to: the budget alone overstates most runs.
    expected_stop: int | None = None
    settings: dict = field(default_factory=dict)
    #: With ``runs`` > 1: each run's ``average`` (``(runs, C, H, W)`` from the engine), from
    #: which the numpy API computes :attr:`uncertainty`; ``None`` for a single run.
    run_averages: np.ndarray | None = None
    #: Per-pixel standard deviation of the runs' results, in the result's units and layout
    #: (set by the numpy API when asked for, ``return_uncertainty=True``).
    uncertainty: np.ndarray | None = None

    @property
    def iterations_per_second(self) -> float:
        return self.iteration / self.elapsed if self.elapsed > 0 else float("nan")


def estimate_memory_bytes(network: SkipNetConfig, channels: int, height: int, width: int) -> int:
    """Rough peak memory of one float32 training step, from the activations autograd keeps.

    Every convolution, normalisation and activation output is kept for the backward pass;
    at scale ``i`` the image has ``4 ** -i`` of the pixels. The factor 1.5 covers the
    gradients and workspace alive during the backward pass: calibrated on a CPU at 512x512
    (RGB), where the measured peak was 2.28 GiB for the paper network (estimate 2.59) and
    1.13 GiB for the fast one (estimate 1.10).
    """
    padded = network.padded_size(height) * network.padded_size(width)
    floats = network.input_channels * padded * 2
    for i in range(network.scales):
        pixels_in = padded / 4**i
        pixels_down = pixels_in / 4
        down, up, skip = network.channels_down[i], network.channels_up[i], network.channels_skip[i]
        below = network.channels_up[i + 1] if i + 1 < network.scales else down
        floats += 3 * skip * pixels_in  # skip conv, norm, act
        floats += 6 * down * pixels_down  # two conv, norm, act blocks
        floats += 2 * (skip + below) * pixels_in  # upsampled + concatenated, merge norm
        floats += 6 * up * pixels_in  # two fuse blocks
    floats += channels * padded * 4
    return int(1.5 * 4 * floats) + 64 * 2**20


class Fitter:
    """One DIP fit: ``network(z)`` is fitted so that ``forward_model(network(z)) ≈ observation``.

    ``observation`` is ``(C, h, w)`` float32 in [0, 1]; ``forward_model`` a module from
    :mod:`napari_dip.engine.forward` whose ``image_size`` gives the size of the restored image.
    """

    def __init__(
        self,
        observation: np.ndarray,
        forward_model: torch.nn.Module,
        network: SkipNetConfig | None = None,
        config: FitConfig | None = None,
        initial_state: FitState | None = None,
        loss: torch.nn.Module | None = None,
    ):
        self.network_config = network or SkipNetConfig()
        #: The data-fit loss (:mod:`napari_dip.engine.losses`); the squared error by default.
        self.loss = loss if loss is not None else SquaredError()
        self.config = config or FitConfig()
        observation = np.asarray(observation, dtype=np.float32)
        # A volume (C, Z, Y, X) is fitted by a 3D network; everything else below is the
        # same for both, over all spatial axes.
        volumetric = isinstance(self.network_config, VolumeNetConfig)
        if volumetric and observation.ndim != 4:
            raise InputError(f"a 3D network fits a (C, Z, Y, X) volume, got shape {observation.shape}")
        if not volumetric and observation.ndim != 3:
            raise InputError(
                f"observation must be (C, H, W), got shape {observation.shape} (a volume needs a VolumeNetConfig)"
            )
        if volumetric and self.config.runs > 1:
            raise InputError("several runs side by side are not available for 3D networks; use runs=1")
        self.device = resolve_device(self.config.device)
        wait_for_warm_up(self.device)  # a dock may have started the device in the background
        self.seed = self.config.seed if self.config.seed is not None else secrets.randbelow(2**31)
        channels = observation.shape[0]
        self.image_size = forward_model.image_size(tuple(observation.shape[1:]))
        if len(self.image_size) != observation.ndim - 1:
            raise InputError(f"{describe_forward_model(forward_model)} works on 2D images only, not on volumes")
        #: Whether the fit recorrupts the noisy image (``FitConfig.recorrupt_sigma``).
        self.recorrupting = self.config.recorrupt_sigma is not None
        if self.recorrupting:
            self._check_recorruption(forward_model)
            # The network's input is the image itself: as many input channels as it has.
            self.network_config = _with_input_channels(self.network_config, channels)
        self._check_memory(channels, *self.image_size)

        cfg = self.network_config
        if volumetric:
            self.padded_size = cfg.padded_shape(self.image_size)
        else:
            self.padded_size = tuple(cfg.padded_size(n) for n in self.image_size)
        #: Where the image sits in the network's padded output, centred on every axis.
        self._crop = tuple(slice((p - n) // 2, (p - n) // 2 + n) for p, n in zip(self.padded_size, self.image_size))

        # The weights and the input are drawn on the CPU from the seed, so a seed means
        # the same start on every device; the global RNG of the caller is left alone.
        # Run k of several uses seed + k, exactly as a single fit with that seed would.
        self.runs = self.config.runs
        nets, inputs = [], []
        for run in range(self.runs):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + run)
                nets.append(VolumeSkipNet(cfg, channels) if volumetric else SkipNet(cfg, channels))
            noise = torch.Generator().manual_seed(self.seed + run)
            inputs.append(torch.rand((1, cfg.input_channels, *self.padded_size), generator=noise) * cfg.input_scale)
        net = nets[0] if self.runs == 1 else SkipNet.side_by_side(nets)
        if self.recorrupting:
            z = self._image_input(torch.as_tensor(observation)[None])
        else:
            z = torch.cat(inputs, dim=1)
        if initial_state is not None:
            # Warm start (the next plane of a stack): the previous fit's weights, and its
            # input unless the input is this plane's image.
            initial_state.check_compatible(self.network_config, channels, self.runs, tuple(z.shape))
            net.load_state_dict(initial_state.network)
            if not self.recorrupting:
                z = initial_state.input.detach().to("cpu").clone()

        memory_format = torch.contiguous_format
        if self.config.channels_last:
            memory_format = torch.channels_last_3d if volumetric else torch.channels_last
        try:
            self.network = net.to(self.device, memory_format=memory_format)
            self.input = z.to(self.device, memory_format=memory_format)
            self.forward_model = forward_model.to(self.device)
            observed = torch.as_tensor(observation)[None].to(self.device)
            self.observation = self.forward_model.prepare_observation(observed)
        except torch.OutOfMemoryError as error:
            raise self._memory_error(channels, self.image_size) from error
        #: The ``torch.compile`` mode the network runs in (``None``: eagerly), and what the
        #: loop calls: the network or its compiled form, which shares its parameters.
        self.compiled = compile_mode(self.config, self.device)
        self._forward = self.network if self.compiled is None else compile_network(self.network, self.compiled)
        self.stopper = self._make_stopper(channels, self.image_size)
        # Once, here: it reads the held-out count from the device.
        self._score_noise = self.stopper.score_noise() if isinstance(self.stopper, HeldOutPixels) else None
        weight = self.stopper.train_weight if isinstance(self.stopper, HeldOutPixels) else None
        #: Multiplies the squared error: held-out pixels are left out of the loss.
        self.loss_weight = weight
        self.loss_norm = None if weight is None else weight.expand_as(self.observation).sum() * self.runs
        #: Whether the steps are captured and replayed as a CUDA graph.
        self.graphs = graphs_wanted(self.config, self.device)
        #: Captures of the step in the last :meth:`run` (a backtrack makes one more), and why
        #: capturing failed there, if it did (the steps then ran eagerly).
        self.graph_captures = 0
        self._graph_failure: str | None = None
        # A captured optimiser step keeps its step count on the device ("capturable").
        # On the CPU, Adam's fused kernel updates all weights in one call: the small
        # networks' per-tensor updates cost about 5 % of a 128² step (BENCHMARKS.md,
        # "Seventh session", benchmarks/adam_step.py). On GPUs it is left unmeasured, so
        # the default stays there.
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=self.config.learning_rate, betas=(0.9, self.config.adam_beta2),
            capturable=self.graphs,
            **({"fused": True} if self.device.type == "cpu" and not self.graphs else {}),
        )
        self._jitter_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        #: CPU threads the fit runs with (set while :meth:`run` runs; ``None`` on a GPU).
        self.threads = None
        if self.device.type == "cpu":
            if self.config.threads == "auto":
                self.threads = cpu_threads(None, idle_cores())
            else:
                self.threads = cpu_threads(self.config.threads)

    # -- public ------------------------------------------------------------------------

    @property
    def settings(self) -> dict:
        """Everything needed to say how a result was made (JSON-serialisable)."""
        return {
            "network": self.network_config.to_dict(),
            "network_parameters": count_parameters(self.network),
            "fit": {**self.config.to_dict(), "seed": self.seed},
            "device": str(self.device),
            "threads": self.threads,
            "compiled": self.compiled,
            # True when steps were replayed as a CUDA graph; the reason where capturing failed.
            "cuda_graphs": self.graphs if self._graph_failure is None else f"failed, ran eagerly: {self._graph_failure}",
            "forward_model": describe_forward_model(self.forward_model),
            "loss": describe_loss(self.loss),
            # Held-out validation: the block left out around each held-out pixel, chosen
            # from the noise's neighbour correlation unless it was given.
            "held_out": None if not isinstance(self.stopper, HeldOutPixels) else {
                "block": self.stopper.block, "noise_correlation": self.stopper.noise_correlation},
            "torch": torch.__version__,
            # With the seed and the threads, what makes a fit repeat to the bit.
            "kernels": kernel_platform(self.device),
        }

    def export_state(self) -> FitState:
        """The network's weights and input now, to start the next plane's fit from
        (``Fitter(..., initial_state=state)``). Copies on the CPU: later steps of this fit
        do not change it."""
        return FitState(
            network={k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()},
            input=self.input.detach().to("cpu", copy=True).contiguous(),
            network_config=self.network_config,
            channels=int(self.observation.shape[1]),
            runs=self.runs,
        )

    def run(self, snapshot_every: int = 100, snapshot_seconds: float | None = None,
            since: float | None = None) -> Iterator[Snapshot]:
        """Fit, yielding a :class:`Snapshot` every ``snapshot_every`` iterations and at the end.

        ``snapshot_seconds`` also yields one whenever that much time has passed since the
        previous snapshot (or the start), so a viewer sees a first result within seconds
        even when one iteration is slow; ``None`` snapshots by iteration count only.
        ``since`` (a :func:`time.perf_counter` reading) moves that start back to when the
        user asked, so the time spent before the fit (reading, estimating the noise,
        building the network, first imports) counts towards the first snapshot.
        """
        if snapshot_every < 1:
            raise InputError(f"snapshot_every must be at least 1, got {snapshot_every}")
        if snapshot_seconds is not None and not snapshot_seconds > 0:
            raise InputError(f"snapshot_seconds must be positive, got {snapshot_seconds}")
        cfg = self.config
        check_every = cfg.check_every
        device_type = self.device.type
        autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.precision)
        scaler = torch.amp.GradScaler(device_type) if cfg.precision == "float16" and device_type == "cuda" else None
        crop = (slice(None), slice(None), *self._crop)

        jitter = torch.empty_like(self.input)
        # The network's input: the jittered buffer, refilled in place every step (a CUDA
        # graph reads it at a fixed address), or the fixed input itself.
        net_input = jitter if cfg.reg_noise_std > 0 else self.input
        # What the output is fitted to: the image, or when recorrupting the image less this
        # step's fresh noise over alpha.
        target = self.observation
        if self.recorrupting:
            # This step's fresh noise, the image recorrupted with it and the target: fixed
            # buffers refilled in place every step, as the jitter is.
            fresh = torch.empty_like(self.input)
            net_input = torch.empty_like(self.input)
            fresh_crop = fresh.view(self.runs, -1, *fresh.shape[2:])[crop]
            target = torch.empty_like(fresh_crop)

        def step():
            """One Adam step on ``net_input``; returns the cropped output and the loss."""
            # Autocast's weight cache cannot live inside a CUDA graph.
            with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None, cache_enabled=not self.graphs):
                full = self._forward(net_input)
            # (1, runs * C, H, W) -> (runs, C, H, W): the runs become a batch.
            outputs = full.view(self.runs, -1, *full.shape[2:])[crop].float()
            predicted = self.forward_model(outputs)
            if self.loss_weight is None:
                loss = self.loss(predicted, target)
            else:
                errors = self.loss.pixel_error(predicted, target)
                loss = (errors * self.loss_weight).sum() / self.loss_norm
            self.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(self.optimizer)
                scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            return outputs.detach(), loss.detach()

        # Local to this run, not kept on the Fitter: ``step`` refers to the Fitter, and a
        # reference cycle would hold the graph's memory on the GPU after ``del fitter``.
        graphed = GraphedStep(step, self.device) if self.graphs else None
        if graphed is not None:
            step = graphed
        losses = torch.zeros(check_every, device=self.device)
        run_averages = average = output = None
        pending = 0  # iterations since the last check
        last_loss = math.nan
        lowest_loss = math.inf  # of the checked, accepted iterations: what a healthy state is measured from
        jump_floor = math.inf  # what a jump is measured from: the same, but only since the last restore
        backtracks = consecutive_backtracks = 0
        learning_rate = cfg.learning_rate
        first = True
        # The first checkpoint is taken after the first step (below), so that a backtrack
        # always comes back to a state with an output to show.
        checkpoint = None
        checkpoint_at = 0
        start = time.perf_counter()
        last_snapshot_time = start if since is None else min(since, start)
        # PyTorch's thread count is process-wide: set it for the fit and put it back after.
        threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        # So is cuDNN's kernel search: on for the fit, put back after it.
        autotune_before = autotune_convolutions(self.device)

        try:
            for iteration in range(1, cfg.iterations + 1):
                if self.recorrupting:
                    fresh.normal_(generator=self._jitter_generator).mul_(cfg.recorrupt_sigma)
                    torch.add(self.input, fresh, alpha=cfg.recorrupt_alpha, out=net_input)
                    # The image less fresh / alpha, in two in-place steps (as the expression
                    # would compute it: the same values to the last bit).
                    torch.div(fresh_crop, cfg.recorrupt_alpha, out=target)
                    torch.sub(self.observation, target, out=target)
                elif cfg.reg_noise_std > 0:
                    # In place: the jitter buffer becomes this step's input, no allocation.
                    jitter.normal_(generator=self._jitter_generator)
                    jitter.mul_(cfg.reg_noise_std).add_(self.input)
                # With CUDA graphs, ``outputs`` and ``loss`` are the graph's tensors, which
                # the next step overwrites: what is kept past it below is a copy.
                outputs, loss = step()
                if run_averages is None:
                    run_averages = outputs.clone()
                else:
                    run_averages.lerp_(outputs, _average_step(cfg.average_weight, iteration))
                output = outputs if self.runs == 1 else outputs.mean(dim=0, keepdim=True)
                average = run_averages if self.runs == 1 else run_averages.mean(dim=0, keepdim=True)
                losses[pending] = loss
                pending += 1
                if checkpoint is None:
                    checkpoint = self._save(run_averages, output, float(loss))  # one host sync, once
                    # Counted from 0, so the first check (at check_every) may save a newer one.
                    checkpoint_at = 0
                # The rules keep every run's average at their best iteration (the runs'
                # spread is the result's uncertainty); their mean is the result.
                if isinstance(self.stopper, WindowedVariance):
                    self.stopper.update(iteration, output, run_averages)
                elif isinstance(self.stopper, HeldOutPixels) and self.recorrupting:
                    # This step's output against this step's target: their noise is
                    # independent, so on pixels left out of the loss the error is the
                    # output's error against the clean image plus a constant.
                    self.stopper.update(iteration, output, run_averages, outputs, target)
                elif isinstance(self.stopper, HeldOutPixels):
                    self.stopper.update(iteration, output, run_averages, self.forward_model(average))

                stop_reason = "budget" if iteration == cfg.iterations else None
                held = None  # the checkpoint a snapshot shows instead of a diverged state
                snapshot_due = iteration % snapshot_every == 0 or stop_reason is not None
                if not snapshot_due and snapshot_seconds is not None:
                    # The clock is read on the host, but no device sync is forced: on a GPU
                    # this measures queued work, which is still the right rate to look at.
                    snapshot_due = time.perf_counter() - last_snapshot_time >= snapshot_seconds
                # The checks (divergence, checkpoint, stopping rule) run on a fixed grid of
                # iterations, never because a snapshot is due: snapshots by time come at
                # iterations that depend on the machine's speed, and a check there would
                # let the speed decide where a fit stops and what it returns.
                if iteration % check_every == 0 or stop_reason is not None:
                    recent = losses[:pending].cpu().numpy()
                    pending = 0
                    if cfg.backtrack and self._jumped(recent, jump_floor):
                        run_averages, output, last_loss = self._restore(checkpoint)
                        if self.stopper is not None:
                            self.stopper.restore_score(checkpoint["rule"])
                        if graphed is not None:
                            # New optimiser state tensors and a new learning rate: capture again.
                            graphed.reset()
                        average = run_averages if self.runs == 1 else run_averages.mean(dim=0, keepdim=True)
                        # Jumps are measured from the restored state's own losses from here:
                        # the checkpoint may hold a step that began a spike, and measured from
                        # the lowest before it, that state's first loss was a jump at every
                        # restore, whatever the step size (Set12/07 inpainted: 21 in a row).
                        # Checkpoints stay healthy against the whole fit's lowest loss.
                        jump_floor = math.inf
                        backtracks += 1
                        consecutive_backtracks += 1
                        if consecutive_backtracks > MAX_CONSECUTIVE_BACKTRACKS:
                            raise FloatingPointError(
                                f"the fit diverged {consecutive_backtracks} times in a row; lower the learning rate"
                            )
                        # A state that blew up once tends to blow up again at the same step
                        # size (Adam's tiny second moments near convergence are part of it):
                        # go on with half the step.
                        learning_rate *= 0.5
                        for group in self.optimizer.param_groups:
                            group["lr"] = learning_rate
                    elif not np.isfinite(recent).all():
                        raise FloatingPointError(
                            f"the loss became {recent[-1]} at iteration {iteration}; "
                            "lower the learning rate or enable backtracking"
                        )
                    else:
                        last_loss = float(recent[-1])
                        block_lowest = float(recent.min())
                        lowest_loss, jump_floor = min(lowest_loss, block_lowest), min(jump_floor, block_lowest)
                        consecutive_backtracks = 0
                        # Only a healthy state becomes the one to come back to: a loss that
                        # creeps up without jumping yet may be the start of a blow-up.
                        healthy = last_loss <= cfg.backtrack_ratio * lowest_loss
                        if healthy and iteration - checkpoint_at >= check_every:
                            checkpoint = self._save(run_averages, output, last_loss)
                            checkpoint_at = iteration
                    if stop_reason is None and self.stopper is not None and self.stopper.should_stop(iteration):
                        stop_reason = self.stopper.name

                elif snapshot_due and pending:
                    # Between checks a snapshot reports without acting. After a blow-up,
                    # which the next check will backtrack from, it shows the last healthy
                    # state instead: never a diverged image.
                    recent = losses[:pending].cpu().numpy()
                    if cfg.backtrack and self._jumped(recent, jump_floor):
                        held = checkpoint
                    else:
                        last_loss = float(recent[-1])

                if snapshot_due or stop_reason is not None:
                    if graphed is not None:
                        self.graph_captures, self._graph_failure = graphed.captures, graphed.failure
                    best = None if self.stopper is None else self.stopper.best_iteration()
                    shown_output, shown_runs = output, run_averages
                    if held is not None:
                        shown_output, shown_runs, last_loss = held["output"], held["average"], held["loss"]
                    if stop_reason is not None and best is not None:
                        shown_output, shown_runs = self.stopper.best_output, self.stopper.best_average
                    shown_average = shown_runs if self.runs == 1 else shown_runs.mean(dim=0, keepdim=True)
                    now = time.perf_counter()
                    last_snapshot_time = now
                    yield Snapshot(
                        iteration=iteration,
                        iterations=cfg.iterations,
                        loss=last_loss,
                        output=_to_numpy(shown_output),
                        average=_to_numpy(shown_average),
                        elapsed=now - start,
                        backtracks=backtracks,
                        done=stop_reason is not None,
                        stop_reason=stop_reason,
                        best_iteration=best,
                        expected_stop=iteration if stop_reason is not None else self._expected_stop(iteration, best),
                        # The first and the last snapshot say how the fit is made, so a
                        # run stopped by its caller can still record it.
                        settings=self.settings if stop_reason is not None or first else {},
                        run_averages=None if self.runs == 1 else shown_runs.to("cpu", torch.float32, copy=True).numpy(),
                    )
                    first = False
                    if stop_reason is not None:
                        return
        except torch.OutOfMemoryError as error:
            raise self._memory_error(self.observation.shape[1], self.image_size) from error
        finally:
            if graphed is not None:
                self.graph_captures, self._graph_failure = graphed.captures, graphed.failure
                # Free the graph's memory pool now: drop the graph, and the gradients it
                # allocated there (the next step's backward would overwrite them anyway).
                graphed.reset()
                self.optimizer.zero_grad(set_to_none=True)
            torch.set_num_threads(threads_before)
            if autotune_before is not None:
                torch.backends.cudnn.benchmark = autotune_before

    # -- internals ---------------------------------------------------------------------

    def _image_input(self, image: torch.Tensor) -> torch.Tensor:
        """The network's input when recorrupting: ``image`` (``(1, C, *size)``) padded as
        the network's output is cropped, once per run."""
        return _padded(image, self._crop, self.padded_size).repeat(1, self.runs, *(1,) * len(self.padded_size))

    def _check_recorruption(self, forward_model: torch.nn.Module) -> None:
        """Recorruption is a way of denoising with the squared error: refuse anything else."""
        if not isinstance(forward_model, Identity):
            raise InputError(
                f"recorrupt_sigma is for denoising only, not for a fit through {describe_forward_model(forward_model)}: "
                "leave recorrupt_sigma None"
            )
        if not isinstance(self.loss, SquaredError):
            raise InputError(
                "recorrupt_sigma assumes Gaussian noise of one level (the squared error), not "
                f"{describe_loss(self.loss)['name']}; fit a Poisson-Gaussian image through the Anscombe transform"
            )

    def _expected_stop(self, iteration: int, best: int | None) -> int:
        """Where the fit is expected to end (:func:`~napari_dip.engine.stopping.expected_stop`):
        never before the first check at or after ``best + patience``, later where the
        rule's score is still falling; the budget without a rule."""
        budget = self.config.iterations
        if self.stopper is None:
            return budget
        return expected_stop(self.config.stopping, iteration, best, budget, self.config.check_every,
                             self.stopper.history, self._score_noise)

    def _make_stopper(self, channels: int, size: tuple[int, ...]):
        stopping = self.config.stopping
        if stopping.rule == "wmv":
            return WindowedVariance(stopping, (channels, *size), self.device, self.seed)
        if stopping.rule == "validation":
            return HeldOutPixels(
                stopping, self.observation, self.forward_model.observed_weight(), self.seed, self.loss.pixel_error
            )
        return None

    def _jumped(self, recent: np.ndarray, lowest: float) -> bool:
        """True when the loss became non-finite, or rose ``backtrack_ratio`` times and by at
        least ``backtrack_min_rise`` above ``lowest``, the lowest loss accepted so far (or,
        before any, above the block's own running minimum).

        Measuring from the lowest loss rather than the previous step also catches a blow-up
        that climbs smoothly over many steps, none of them a jump on its own.
        """
        if not np.isfinite(recent).all():
            return True
        floor = np.minimum.accumulate(np.concatenate([[lowest], recent]))[:-1]
        rises = (recent > self.config.backtrack_ratio * floor) & (recent - floor > self.config.backtrack_min_rise)
        return bool(np.any(rises))

    def _save(self, average, output, loss: float) -> dict:
        # Clones, so later in-place updates of the live tensors cannot alter the checkpoint.
        return {
            "network": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "average": None if average is None else average.clone(),
            "output": None if output is None else output.clone(),
            "loss": loss,
            # The stopping rule's running score, put back with the rest after a backtrack.
            "rule": None if self.stopper is None else self.stopper.score_state(),
        }

    def _restore(self, checkpoint: dict):
        self.network.load_state_dict(checkpoint["network"])
        # load_state_dict may keep references to the tensors it is given: hand it copies.
        self.optimizer.load_state_dict(copy.deepcopy(checkpoint["optimizer"]))
        average = None if checkpoint["average"] is None else checkpoint["average"].clone()
        output = None if checkpoint["output"] is None else checkpoint["output"].clone()
        return average, output, checkpoint["loss"]

    def _needed_bytes(self, channels: int, size: tuple[int, ...]) -> int:
        cfg = self.network_config
        if isinstance(cfg, VolumeNetConfig):
            return cfg.memory_bytes(channels, size) * self.config.runs
        return estimate_memory_bytes(cfg, channels, *size) * self.config.runs

    def _check_memory(self, channels: int, *size: int) -> None:
        needed = self._needed_bytes(channels, size)
        free = free_memory_bytes(self.device)
        if free is not None and needed > free:
            raise self._memory_error(channels, size, needed=needed, free=free)

    def _memory_error(self, channels, size, needed=None, free=None) -> DeviceMemoryError:
        needed = needed or self._needed_bytes(channels, size)
        have = f" and {free / 2**30:.1f} GiB are free" if free else ""
        what = "volume" if len(size) == 3 else "image"
        return DeviceMemoryError(
            f"a {'x'.join(str(n) for n in size)} {what} with this network needs about {needed / 2**30:.1f} GiB on "
            f"{self.device}{have}; use the 'fast' preset, fewer channels, a crop, or another device"
        )


def _with_input_channels(network: SkipNetConfig | VolumeNetConfig, channels: int):
    """``network`` taking ``channels`` input channels (a volume network: its planes')."""
    if isinstance(network, VolumeNetConfig):
        return replace(network, plane=replace(network.plane, input_channels=channels))
    return replace(network, input_channels=channels)


def _average_step(weight: float, count: int) -> float:
    """How far the running average moves towards output number ``count`` (from 1): the
    exponential average of weight ``weight`` with Adam's correction for its start,
    ``(1 - weight) / (1 - weight ** count)``. Without it the first output, a random
    network's, would still weigh ``weight ** count`` in the average (0.99 ** 300 is 5 %):
    a fit's early pictures showed mostly that, 9 dB below the corrected average at 200
    iterations of x4 super-resolution (BENCHMARKS.md, "The running average's start").
    Late in a fit the two agree (the step is ``1 - weight`` to within ``weight ** count``).

    >>> _average_step(0.99, 1), round(_average_step(0.99, 2), 4), round(_average_step(0.99, 10**4), 4)
    (1.0, 0.5025, 0.01)
    """
    return (1.0 - weight) / (1.0 - weight**count)


def _padded(image: torch.Tensor, crop: tuple[slice, ...], padded_size: tuple[int, ...]) -> torch.Tensor:
    """``image`` (``(1, C, *size)``) padded to ``padded_size`` so that ``crop`` takes it back
    out: its edge values repeated outwards, as far as the network needs."""
    pads = []
    for region, full in zip(reversed(crop), reversed(padded_size)):
        pads += [region.start, full - region.stop]
    return torch.nn.functional.pad(image, pads, mode="replicate") if any(pads) else image.clone()


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    # A copy even on the CPU: the live tensors are updated in place after the yield.
    return tensor[0].detach().to("cpu", torch.float32, copy=True).numpy()


def fit(
    observation: np.ndarray,
    forward_model: torch.nn.Module,
    network: SkipNetConfig | None = None,
    config: FitConfig | None = None,
    snapshot_every: int = 100,
    snapshot_seconds: float | None = None,
) -> Iterator[Snapshot]:
    """Generator form of :class:`Fitter`: ``for snap in fit(y, Identity()): ...``."""
    return Fitter(observation, forward_model, network, config).run(snapshot_every, snapshot_seconds)
