"""Per-task settings: the paper's, and a narrower network that is practical on a CPU.

Sources (Ulyanov et al., CVPR 2018, and its supplementary material):

* denoising: 3000 iterations, learning rate 0.01, input jitter 1/30;
* super-resolution: x4 (also used here for x2 and x3) 2000 iterations with jitter 0.03,
  x8 4000 iterations with jitter 0.05;
* inpainting: 6000 iterations, learning rate 0.01, jitter 0.03, a network without skip
  connections and with nearest-neighbour upsampling.

``fast`` uses 48 instead of 128 channels per scale (32 for denoising, where that was
measured to hold the quality), and for super-resolution and inpainting a shorter
budget with Adam's ``beta2`` at 0.95 (:data:`SCHEDULE_CHANGES`). ``auto`` (the
default) is ``paper`` on a CUDA GPU and ``fast`` elsewhere (CPU, Apple MPS), where the
paper's network takes hours per image (:func:`resolve_preset`). Every value can be
overridden by the caller.

One departure: when the noise level of the image is known (estimated by
:func:`napari_dip.restore.estimate_noise`), denoising scales its input jitter with it
(:func:`denoising_jitter`); the paper's 1/30 is what that gives at sigma = 25/255.
``fast`` and ``auto`` depart further there: they denoise by recorruption (the noisy image
as the network's input, fresh noise split between input and target at every step;
``FitConfig.recorrupt_sigma``, Adam's ``beta2`` 0.95), which reached the paper way's quality
in fewer steps; ``fast`` with a smaller network (16 channels in 3 scales,
:data:`~.networks.RECORRUPTION_NETWORKS`), ``auto`` on CUDA with the paper's network.
``paper`` asked for by name fits the paper's way.
"""

from __future__ import annotations

from dataclasses import replace

from .devices import resolve_device
from ..errors import InputError
from .fit import FitConfig, estimate_memory_bytes
from .forward import SUPPORTED_FACTORS
from .networks import NETWORK_PRESETS, RECORRUPTION_NETWORKS, SkipNetConfig
from .stopping import StoppingConfig

TASKS = ("denoise", "super-resolve", "inpaint")
#: Automatic stopping per task, chosen from benchmarks/stopping.py (BENCHMARKS.md): for
#: denoising, held-out validation landed within 0.05 dB of its fit's best iteration for any
#: patience from 200 to 1000, while ES-WMV's result swung by 0.7 dB with the patience; on 8
#: traces of 128 px Set12 crops (sigma 25 and 50, 48 channels) a patience of 100 with a
#: trend test returned the same results as 300 and stopped about 220 iterations sooner. The
#: trend test's rise is 0.5 %: 0.3 % stopped one of 12 traces of the 32-channel network
#: (which peaks later and flatter) 0.22 dB early; 0.5 % returned the patience-100 result
#: on all 20 traces. For super-resolution and inpainting quality still rose at the end of
#: the budget, and ES-WMV with the published patience (1000) kept the end result (held-out
#: pixels cost 0.3 dB there).
DEFAULT_STOPPING = {
    "denoise": StoppingConfig(rule="validation", patience=100, rise=0.005),
    "super-resolve": StoppingConfig(rule="wmv", patience=1000),
    "inpaint": StoppingConfig(rule="wmv", patience=1000),
}
#: Denoising by recorruption scores each step's output against its own recorrupted target
#: on the held-out pixels (:meth:`~napari_dip.engine.stopping.HeldOutPixels.update`): a
#: noisier score than the running average's, so smoothed over about 100 steps instead of
#: 10, and smooth enough then for a trend test at 0.2 %. On 4 Set12 128² crops (sigma 25
#: and 50) that returned the same results as 0.5 % and stopped 0-75 iterations sooner; on
#: the 4 it was chosen on it stopped 50-225 sooner, 0.14 and 0.02 dB lower on two
#: (BENCHMARKS.md, "Scoring recorrupted fits on their own targets").
RECORRUPTION_STOPPING = StoppingConfig(rule="validation", patience=100, rise=0.002, smoothing=0.99)
#: A rule chosen instead of the task's default: ES-WMV with its published patience, held-out
#: validation with the patience measured before the trend test (which was tuned on
#: denoising only).
CHOSEN_RULE_STOPPING = {
    "wmv": StoppingConfig(rule="wmv", patience=1000),
    "validation": StoppingConfig(rule="validation", patience=300),
    "none": StoppingConfig(rule="none"),
}
#: Whether a preset, as the caller named it, denoises by recorruption when the noise level
#: is known (``settings_for(recorrupt=None)``). ``paper`` asked for by name keeps the paper's
#: fixed noise input; ``auto`` recorrupts whichever network it picks. On CUDA that is the
#: paper network: at 512² on an H100 it was 1.6-1.9x sooner than the paper's way and
#: +0.19 to +1.48 dB in four comparisons on three images at sigma 25 and 50, with Adam's
#: beta2 at 0.95
#: (BENCHMARKS.md, "Time to result on a GPU: NVIDIA H100, fourth lease").
RECORRUPT_BY_DEFAULT = {"auto": True, "paper": False, "fast": True}
#: Per preset, Adam's ``beta2`` when the fit recorrupts (:attr:`FitConfig.adam_beta2`); a
#: preset not named keeps 0.999. On 6 crops of Set12 and CSet9 (128², sigma 25 and 50) the
#: ``fast`` recorruption network's fits with 0.95 peaked -0.03 to +0.31 dB from those with
#: 0.999 and came within 0.05 dB of the latter's peak 1.1-1.7x sooner; automatically
#: stopped, 5 fits were 1.18x sooner in all, -0.08 to +0.37 dB (BENCHMARKS.md, "Tenth
#: session"). Photon-limited images recorrupted through the Anscombe transform keep 0.999:
#: on 6 FMD crops 0.95 returned -0.26 dB on the mean (-0.63 to +0.20). The paper network's
#: recorrupted fits at 512² on an H100: +0.06 to +0.85 dB and 1.05-1.5x sooner in four
#: comparisons on three images (BENCHMARKS.md, "Time to result on a GPU: NVIDIA H100, fourth lease").
RECORRUPTION_ADAM_BETA2 = {"fast": 0.95, "paper": 0.95}
#: Where a network preset departs from the paper's schedule (:func:`schedule`) for a task
#: fitted the paper's way (a fixed noise input): Adam's ``beta2`` and the share of the
#: paper's iteration budget it runs (:func:`preset_schedule`). With ``beta2`` 0.95 the
#: ``fast`` network's x4 super-resolution and inpainting fits reached the paper schedule's
#: results in a fraction of its iterations (some then fell slowly), but ES-WMV's window
#: variance kept falling, so its stop no longer fired: the shorter budget is what ends them
#: (BENCHMARKS.md, "Super-resolution and inpainting: Adam with a shorter memory, and a
#: shorter budget"). The same share of the budget gave, against the paper schedule's
#: results on Set5 crops, +0.44 and +1.05 dB at x2 (800 iterations), +0.09 to +0.36 dB at
#: x3 (800) and -0.19 to +1.50 dB at x8 (1600; +0.60 on the mean) (BENCHMARKS.md, "Every
#: super-resolution factor with the shorter schedule").
SCHEDULE_CHANGES: dict[str, dict[str, dict]] = {
    "fast": {
        "super-resolve": {"adam_beta2": 0.95, "budget": 0.4},
        "inpaint": {"adam_beta2": 0.95, "budget": 1 / 6},
    },
}
#: ``auto`` picks one of the network presets for the device (:func:`resolve_preset`).
PRESETS = ("auto", *NETWORK_PRESETS)
DEFAULT_PRESET = "auto"


def resolve_preset(preset: str = DEFAULT_PRESET, device: str = "auto") -> str:
    """The network preset ``preset`` stands for on ``device``: ``auto`` is ``paper`` on a
    CUDA GPU and ``fast`` on anything else; ``paper`` and ``fast`` are themselves.

    >>> resolve_preset("paper", "cpu"), resolve_preset("auto", "cpu")
    ('paper', 'fast')
    """
    return preset_on(preset, resolve_device(device).type if preset == "auto" else None)


def preset_on(preset: str, device_type: str | None) -> str:
    """:func:`resolve_preset` for a device known by its type (``"cuda"``, ``"cpu"``, ...),
    without looking at the machine: ``auto`` is ``paper`` on ``"cuda"``, else ``fast``.

    >>> preset_on("auto", "cuda"), preset_on("auto", "mps"), preset_on("fast", "cuda")
    ('paper', 'fast', 'fast')
    """
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if preset != "auto":
        return preset
    return "paper" if device_type == "cuda" else "fast"


def schedule(task: str, factor: int | None = None) -> dict:
    """The paper's iterations, learning rate and input jitter for a task."""
    if task == "denoise":
        return {"iterations": 3000, "learning_rate": 0.01, "reg_noise_std": 1.0 / 30.0}
    if task == "super-resolve":
        if factor not in SUPPORTED_FACTORS:
            raise InputError(f"super-resolution factor must be one of {SUPPORTED_FACTORS}, got {factor}")
        if factor == 8:
            return {"iterations": 4000, "learning_rate": 0.01, "reg_noise_std": 0.05}
        return {"iterations": 2000, "learning_rate": 0.01, "reg_noise_std": 0.03}
    if task == "inpaint":
        return {"iterations": 6000, "learning_rate": 0.01, "reg_noise_std": 0.03}
    raise InputError(f"unknown task {task!r}; choose one of {TASKS}")


def preset_schedule(task: str, preset: str, factor: int | None = None) -> dict:
    """The schedule a network preset (``paper`` or ``fast``, not ``auto``) fits a task with
    the paper's way: :func:`schedule` with the preset's :data:`SCHEDULE_CHANGES`.

    >>> preset_schedule("inpaint", "paper")["iterations"], preset_schedule("inpaint", "fast")["iterations"]
    (6000, 1000)
    >>> [preset_schedule("super-resolve", "fast", factor=f)["iterations"] for f in (2, 3, 4, 8)]
    [800, 800, 800, 1600]
    """
    values = schedule(task, factor)
    change = SCHEDULE_CHANGES.get(preset, {}).get(task)
    if change:
        values["iterations"] = round(values["iterations"] * change["budget"])
        values["adam_beta2"] = change["adam_beta2"]
    return values


#: Bounds of the denoising jitter: the paper's value at low noise, and the largest measured.
DENOISING_JITTER_RANGE = (1.0 / 30.0, 1.0 / 15.0)


def denoising_jitter(noise_sigma: float) -> float:
    """Input jitter for denoising an image whose noise has standard deviation ``noise_sigma``
    (of the [0, 1] range): a third of it, kept within :data:`DENOISING_JITTER_RANGE`.

    Measured on 96 px crops of Set12 (BENCHMARKS.md): at sigma = 50/255, a jitter of 1/15
    instead of the paper's 1/30 raised the best PSNR by 1.1 dB and flattened the decay after
    it; at sigma = 10/255 it cost 2 dB, and 1/60 cost 0.3 dB against 1/30.

    >>> round(denoising_jitter(25 / 255), 4), round(denoising_jitter(50 / 255), 4)
    (0.0333, 0.0654)
    """
    low, high = DENOISING_JITTER_RANGE
    return min(max(noise_sigma / 3.0, low), high)


#: The split of the fresh noise between input and target when recorrupting, for noise of
#: sigma = 25/255 and 50/255 and in between (:func:`recorruption_alpha`).
RECORRUPTION_ALPHA_RANGE = (1.5, 2.0)


def recorrupts_by_default(task: str, preset: str, jitter_given: bool) -> bool:
    """Whether ``preset`` as the caller named it (``auto`` included) denoises by
    recorruption when the caller neither asks for it nor refuses it:
    :data:`RECORRUPT_BY_DEFAULT`, for denoising, unless an input jitter is given (that is
    the paper's way of fitting).

    >>> recorrupts_by_default("denoise", "auto", False), recorrupts_by_default("denoise", "paper", False)
    (True, False)
    """
    if preset not in RECORRUPT_BY_DEFAULT:
        raise InputError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    return task == "denoise" and RECORRUPT_BY_DEFAULT[preset] and not jitter_given


def recorruption_alpha(noise_sigma: float) -> float:
    """How recorruption splits its fresh noise for noise of ``noise_sigma`` ([0, 1] range):
    ``1 + noise_sigma / (50/255)``, kept within :data:`RECORRUPTION_ALPHA_RANGE`.

    A larger alpha puts more of the fresh noise into the input and less into the target: the
    fit peaks later, higher and flatter. Measured on 128 px Set12 crops (01 and 02, PSNR of
    the running average; BENCHMARKS.md): at sigma = 50/255 alpha 1 peaked 0.6 dB below the
    paper's fixed input, 1.5 0.02 dB below it and 2 above it; at 25/255 1.5 peaked as high as
    2 but sooner, and 0.1 dB above 1.

    >>> recorruption_alpha(25 / 255), recorruption_alpha(50 / 255), recorruption_alpha(10 / 255)
    (1.5, 2.0, 1.5)
    """
    low, high = RECORRUPTION_ALPHA_RANGE
    return min(max(1.0 + noise_sigma / (50.0 / 255.0), low), high)


def stopping_for(
    task: str, rule: str | StoppingConfig | None = None, patience: int | None = None, recorrupt: bool = False,
) -> StoppingConfig:
    """The automatic stopping a task uses by default, or the caller's choice of rule;
    ``recorrupt``: for denoising by recorruption (:data:`RECORRUPTION_STOPPING`).

    >>> stopping_for("denoise").rise, stopping_for("denoise", recorrupt=True).rise
    (0.005, 0.002)
    """
    if isinstance(rule, StoppingConfig):
        config = rule
    else:
        default = RECORRUPTION_STOPPING if recorrupt and task == "denoise" else DEFAULT_STOPPING[task]
        if rule is None or rule == default.rule:
            config = default
        elif rule in CHOSEN_RULE_STOPPING:
            config = CHOSEN_RULE_STOPPING[rule]
        else:
            config = replace(default, rule=rule)  # StoppingConfig says what is wrong with it
    return config if patience is None else replace(config, patience=patience)


def network_for(
    task: str, preset: str = DEFAULT_PRESET, recorrupt: bool = False, channels: int | None = None,
) -> SkipNetConfig:
    """The network a preset uses for a task (``auto``: for the default device); with
    ``recorrupt``, for denoising by recorruption (:data:`RECORRUPTION_NETWORKS`); with
    ``channels`` (not ``None`` or 0), that many channels per scale.

    >>> network_for("denoise", "fast").scales, network_for("denoise", "fast", recorrupt=True).scales
    (5, 3)
    >>> network_for("denoise", "fast", channels=8).channels_down
    (8, 8, 8, 8, 8)
    """
    preset = resolve_preset(preset)
    if recorrupt and task == "denoise" and preset in RECORRUPTION_NETWORKS:
        net = RECORRUPTION_NETWORKS[preset]
    else:
        networks = NETWORK_PRESETS[preset]
        net = networks.get(task, networks["default"])
    return net.with_width(channels) if channels else net


def plane_memory_bytes(
    task: str, preset: str, colours: int, height: int, width: int, factor: int | None = None,
    channels: int | None = None,
) -> int:
    """Estimated peak memory of fitting one ``height x width`` plane (enlarged ``factor``
    times) with the preset's network, ``channels`` wide: what the command line and the
    widget show before a fit (:func:`~napari_dip.engine.fit.estimate_memory_bytes`)."""
    net = network_for(task, preset, channels=channels)
    f = factor or 1
    return estimate_memory_bytes(net, max(1, min(colours, 3)), height * f, width * f)


def settings_for(
    task: str,
    preset: str = DEFAULT_PRESET,
    factor: int | None = None,
    channels: int | None = None,
    network: SkipNetConfig | None = None,
    stopping: str | StoppingConfig | None = None,
    patience: int | None = None,
    noise_sigma: float | None = None,
    recorrupt: bool | None = None,
    photon_limited: bool = False,
    **fit_overrides,
) -> tuple[SkipNetConfig, FitConfig]:
    """Network and fit configuration for a task and preset, with the caller's overrides.

    ``preset`` ``auto`` is resolved for ``fit_overrides["device"]`` (:func:`resolve_preset`).
    ``channels`` narrows or widens the preset's network (when recorrupting, its recorruption
    network: :func:`network_for`); ``network`` replaces it;
    ``stopping`` is a rule name (``"wmv"``, ``"validation"``, ``"none"``) or a
    :class:`StoppingConfig`, ``patience`` overrides its patience; ``noise_sigma``, the
    image's noise level if known, sets the denoising jitter (:func:`denoising_jitter`)
    unless ``reg_noise_std`` is given; ``recorrupt`` (``None``: the preset's choice,
    :data:`RECORRUPT_BY_DEFAULT`) denoises by recorruption with noise of ``noise_sigma``,
    which it then needs; ``photon_limited``: the fit is of photon-limited noise made
    Gaussian by the Anscombe transform (recorrupted with Adam's usual ``beta2``,
    :data:`RECORRUPTION_ADAM_BETA2`); ``fit_overrides`` are :class:`FitConfig` fields (``None`` values
    are ignored).

    >>> net, fit = settings_for("super-resolve", "fast", factor=8, iterations=10)
    >>> fit.iterations, fit.reg_noise_std, net.channels_down[0]
    (10, 0.05, 48)
    """
    resolved = resolve_preset(preset, fit_overrides.get("device") or "auto")
    return _settings(task, preset, resolved, factor, channels, network, stopping, patience, noise_sigma, recorrupt,
                     photon_limited, **fit_overrides)


def _settings(
    task: str, requested: str, preset: str, factor: int | None, channels: int | None, network: SkipNetConfig | None,
    stopping: str | StoppingConfig | None, patience: int | None, noise_sigma: float | None, recorrupt: bool | None,
    photon_limited: bool, **fit_overrides,
) -> tuple[SkipNetConfig, FitConfig]:
    """:func:`settings_for` with the preset as asked for (``requested``, which decides
    whether to recorrupt) and the network preset it resolved to (``preset``) apart."""
    if channels is not None and channels < 1:
        raise InputError(f"channels must be positive, got {channels}")
    unknown = set(fit_overrides) - set(FitConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown fit setting(s): {', '.join(sorted(unknown))}")
    values = preset_schedule(task, preset, factor)
    given_sigma = fit_overrides.get("recorrupt_sigma")
    if recorrupt is False and given_sigma is not None:
        raise InputError("recorrupt=False and recorrupt_sigma contradict each other: leave recorrupt_sigma unset")
    if given_sigma is not None:
        recorrupt = True
    if recorrupt and task != "denoise":
        raise InputError(f"recorruption is a way of denoising, not of the {task!r} task: leave recorrupt unset "
                         "(no --recorrupt)")
    # The level to recorrupt with: the caller's, else the image's estimate.
    sigma = given_sigma if given_sigma is not None else noise_sigma
    if recorrupt and not (sigma is not None and sigma > 0):
        raise InputError(f"recorruption needs the image's noise level, and none was found (estimate {sigma}): "
                         "use recorrupt=False (--no-recorrupt) for the paper's way")
    jitter_given = fit_overrides.get("reg_noise_std") is not None
    if recorrupt and jitter_given:
        raise InputError("recorruption does not jitter a noise input: give recorrupt or reg_noise_std "
                         "(--recorrupt or --reg-noise-std), not both")
    if recorrupt is None:
        # An input jitter asked for is the paper's way of fitting: kept. So is an image in
        # which no noise was found (a stack whose sampled planes are constant: level 0).
        recorrupt = recorrupts_by_default(task, requested, jitter_given) and sigma is not None and sigma > 0
    if task == "denoise" and noise_sigma is not None:
        values["reg_noise_std"] = denoising_jitter(noise_sigma)
    if recorrupt:
        # The recorruption replaces the input jitter: recorded as none, since none is used.
        values.update(recorrupt_sigma=sigma, recorrupt_alpha=recorruption_alpha(sigma), reg_noise_std=0.0)
        if preset in RECORRUPTION_ADAM_BETA2 and not photon_limited:
            values["adam_beta2"] = RECORRUPTION_ADAM_BETA2[preset]
    values.update({k: v for k, v in fit_overrides.items() if v is not None})
    values["stopping"] = stopping_for(task, stopping, patience, recorrupt=bool(recorrupt))
    net = network if network is not None else network_for(task, preset, recorrupt=bool(recorrupt))
    if channels is not None:
        net = net.with_width(channels)
    return net, replace(FitConfig(), **values)


#: FitConfig fields that set how fast a fit runs, not what it returns.
_SPEED_FIELDS = frozenset({"device", "threads", "compile", "cuda_graphs", "channels_last"})


#: Noise levels the fingerprint describes the defaults at: below, within and above the
#: ranges of the rules that depend on the noise (:data:`DENOISING_JITTER_RANGE`,
#: :data:`RECORRUPTION_ALPHA_RANGE`), so a change of a bound changes it.
FINGERPRINT_NOISE_LEVELS = (5.0 / 255.0, 25.0 / 255.0, 40.0 / 255.0, 75.0 / 255.0)


def defaults_fingerprint(task: str, preset: str = DEFAULT_PRESET, factor: int | None = None,
                         device: str = "auto") -> str:
    """A short hash of the defaults ``preset`` (as the caller names it) fits ``task`` with on
    ``device``: network, schedule, stopping, recorruption and warm start, for Gaussian and
    photon-limited noise. It changes when a release changes how a result is made without
    any option changing (as when ``auto`` on a GPU began to denoise by recorruption), so
    that a batch resumed after an upgrade redoes results made the old way
    (:mod:`napari_dip.batch.records`). A device that is named but absent here (a cluster's
    GPU workers, seen from a client without one) is taken at its word.

    >>> defaults_fingerprint("denoise", "auto", device="cpu") == defaults_fingerprint("denoise", "fast")
    True
    >>> defaults_fingerprint("denoise", "auto", device="cuda") == defaults_fingerprint("denoise", "paper")
    False
    """
    import hashlib
    import json
    from dataclasses import asdict

    name = str(device or "auto").strip().lower()
    if name == "auto":
        import torch

        # Asked without picking a device (resolve_device would, creating a CUDA context): a
        # batch's client computes this beside its GPU workers.
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = name.split(":")[0]
    resolved = preset_on(preset, kind)
    if task == "super-resolve" and factor is None:
        factor = 4
    described = []
    for photon_limited in ((False, True) if task == "denoise" else (False,)):
        for noise_sigma in FINGERPRINT_NOISE_LEVELS:
            net, fit = _settings(task, preset, resolved, factor, None, None, None, None, noise_sigma, None,
                                 photon_limited)
            described.append([asdict(net), *({k: v for k, v in asdict(f).items() if k not in _SPEED_FIELDS}
                                             for f in (fit, warm_start_config(fit)))])
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Warm start across the planes of a stack (DECO-DIP does this for video): later planes
#: start from the previous plane's network at a fraction of the learning rate, with a small
#: budget and their own automatic stop, which may fire from the first iteration on.
WARM_START_ITERATIONS = 150
#: The fraction: half. DECO-DIP's tenth was the default until 2026-11-28. On nine drifting
#: 8-frame 128² stacks, half the rate scored the same or better on the stack's mean at the
#: same time a frame (BENCHMARKS.md, "Half the learning rate for warm planes"):
#: - fits from a noise input (three x4 super-resolved, three inpainted, one denoised the
#:   paper's way): +0.01 to +0.35 dB, with the worst frame closer to its fit from scratch;
#: - recorrupted fits (a Set12 and an FMD stack): +0.03 and +0.10 dB.
WARM_START_LR_FACTOR = 0.5
#: The running average of a warm plane starts from the previous plane's picture (its first
#: output); at the fit's usual weight (0.99) a fifth of that was still in it after 150
#: iterations, so a warm plane averages over a shorter span. That was measured before the
#: average was corrected for its start (``fit._average_step``), which fades the first
#: output as fast as any other; 0.99 spans about 100 of the 150 outputs still, and the
#: choice was not measured again.
WARM_START_AVERAGE_WEIGHT = 0.9
#: How often a warm plane's stop is checked and how long the trend test waits after its
#: best. Checking every 5 and waiting 10 made warm frames of the 16-frame 128² Set12 stack
#: 13 % of the first frame's time instead of 15 %, but 0.29 dB below independent fits
#: instead of 0.06 dB (benchmarks/stacks.py, BENCHMARKS.md): they stay at the cold fit's 25.
WARM_START_CHECK_EVERY = 25
WARM_START_MIN_WAIT = 25
#: A warm plane fitted by recorruption is scored on single steps' errors, smoothed over
#: about 100 steps (:data:`RECORRUPTION_STOPPING`): over its first few dozen steps that
#: score is a handful of noisy samples, and a trend test from the first step stopped 3 of
#: the 15 warm frames of the Set12 stack after 25-50 steps, 1.7-2.0 dB below the others.
#: Such planes rate no iteration before this one and stop on the patience alone.
WARM_START_RECORRUPTION_WARMUP = 50


#: A fit from a fixed noise input builds its picture where that input put it. A stack's
#: plane whose picture has moved more than this many pixels (of the result, along Y or X)
#: from the plane its warm-start chain began on is fitted from scratch, and a new chain
#: begins there. On two drifting 8-frame Set12 stacks super-resolved x4 (one pixel right
#: and down a frame), warm frames 1-3 pixels from the chain's start were at most 0.39 dB
#: below fits from scratch and up to 0.95 dB above; at 4 pixels one was 1.03 dB above and
#: one 0.31 below; at 5-7 pixels all six were 0.26-1.67 dB below (BENCHMARKS.md,
#: "Super-resolution stacks with fast's shorter schedule"). Recorrupted fits take the
#: plane itself as input, which moves with the picture: no limit for them.
WARM_START_MAX_DRIFT = 3.0
#: ... but only where the two planes' detail, once aligned, correlates at least this well
#: (:func:`napari_dip.drift.picture_shift`): planes that are different pictures rather
#: than one picture moved (a Z-stack through changing structures, unrelated frames) give
#: the registration nothing to find, and their shift is no drift. On the drifting Set12
#: frames the detail matched the first frame at 0.92-1.00 (x4 low resolution, or half the
#: pixels missing); unrelated photographs at 0.01-0.03, also under one gradient of light
#: (benchmarks/drift_match.py, BENCHMARKS.md "A drifted plane fitted afresh"). Noisy
#: planes match less (0.22-0.68 at sigma 25), so denoising the paper's way restarts less.
WARM_START_MIN_MATCH = 0.5


def warm_start_config(config: FitConfig) -> FitConfig:
    """The fit settings of a plane that starts from the previous plane's network.

    >>> from napari_dip.engine.fit import FitConfig
    >>> follow = warm_start_config(FitConfig(iterations=3000, learning_rate=0.01))
    >>> follow.iterations, follow.learning_rate, follow.stopping.warmup, follow.check_every
    (150, 0.005, 0, 25)
    """
    stopping = replace(
        config.stopping,
        warmup=0,
        patience=min(config.stopping.patience, WARM_START_ITERATIONS // 3),
        min_wait=min(config.stopping.min_wait, WARM_START_MIN_WAIT),
    )
    if config.recorrupt_sigma is not None and stopping.rule == "validation":
        stopping = replace(stopping, warmup=min(config.stopping.warmup, WARM_START_RECORRUPTION_WARMUP), rise=None)
    return replace(
        config,
        check_every=min(config.check_every, WARM_START_CHECK_EVERY),
        iterations=min(config.iterations, WARM_START_ITERATIONS),
        learning_rate=config.learning_rate * WARM_START_LR_FACTOR,
        average_weight=min(config.average_weight, WARM_START_AVERAGE_WEIGHT),
        stopping=stopping,
    )
