"""Choosing the device a fit runs on, and saying what it is."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..errors import InputError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Names a user can pick: ``auto``, each CUDA device, ``mps`` where present, ``cpu``."""
    names = ["auto"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def cuda_start_pending(name: str | torch.device = "auto") -> bool:
    """Whether resolving ``name`` will start CUDA in this process: it names a CUDA device
    (``auto`` where one is present) and CUDA has not started yet. A process's first CUDA
    call starts the driver and a context, several seconds before anything else can be
    said (10 s to a first picture on an H200, BENCHMARKS.md "Time to result on a GPU:
    NVIDIA H200, fifth lease"): a caller can say so first. Creates no CUDA context itself.

    >>> cuda_start_pending("cpu")
    False
    """
    # is_available counts the devices (the driver may start) but creates no context and
    # leaves torch's lazy CUDA start undone, which is the part that takes seconds.
    if not torch.cuda.is_available() or torch.cuda.is_initialized():
        return False
    try:
        return resolve_device(name).type == "cuda"  # which starts nothing either
    except InputError:
        return False  # not a device here: what uses it says so


def _current_cuda_index() -> int:
    """The current CUDA device, without starting CUDA to ask: until CUDA has started in
    this process nothing can have made another device current, so it is 0. (Asking
    ``torch.cuda.current_device()`` first starts CUDA, seconds on the caller's thread: the
    napari docks resolve their device on the UI thread.)"""
    return torch.cuda.current_device() if torch.cuda.is_initialized() else 0


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto`` (CUDA, then Apple MPS, then CPU) or an explicit name into a device.

    An explicit device that is not present raises :class:`InputError` instead of failing
    later inside the fit.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _current_cuda_index())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"unknown device {name!r}; choose one of {available_devices()}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
        index = device.index if device.index is not None else _current_cuda_index()
        if index >= torch.cuda.device_count():
            raise InputError(f"there is no CUDA device {index}; choose one of {available_devices()}")
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise InputError("device 'mps' was asked for but Apple MPS is not available; use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device type {device.type!r} is not supported; choose one of {available_devices()}")
    return device


def total_memory_bytes(device: torch.device) -> int | None:
    """Memory the device has in all (RAM for the CPU), or ``None`` when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory free now on the device, or ``None`` when it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    if device.type == "cpu":
        return _available_ram()
    return None


def _available_ram() -> int | None:
    # MemAvailable counts the page cache the kernel can drop; free pages alone undercount.
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def describe_device(name: str | torch.device = "auto") -> str:
    """One line for a user: which device ``name`` resolves to, and its memory."""
    device = resolve_device(name)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device}: {props.name}, {props.total_memory / 2**30:.1f} GiB"
    if device.type == "mps":
        return "mps: Apple GPU (unified memory)"
    total = total_memory_bytes(device)
    memory = f", {total / 2**30:.1f} GiB RAM" if total else ""
    return f"cpu: {torch.get_num_threads()} threads{memory}"


def _cpu_model() -> str | None:
    """The CPU's model name where the system says it (Linux: ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def kernel_platform(device: torch.device) -> str:
    """What a result's floating-point rounding depends on besides the seed and the thread
    count: the CPU (the instruction set torch's kernels use, and the model) or the GPU
    model. The same commit, seed and threads gave another result from one day to the next
    on a machine described the same way (the demo's 128² fit: 28.71 dB, then 28.87 dB):
    later steps amplify rounding differences (BENCHMARKS.md "Reproducing a fit on another
    machine").

    >>> kernel_platform(torch.device("cpu")).startswith("cpu ")
    True
    """
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda {props.name} (sm_{props.major}{props.minor})"
    if device.type == "mps":
        return "mps"
    model = _cpu_model()
    return f"cpu {torch.backends.cpu.get_cpu_capability()}" + (f" ({model})" if model else "")


def _cpu_times() -> list[tuple[int, int]] | None:
    """``(idle, total)`` jiffies of each CPU from /proc/stat, or ``None`` off Linux."""
    try:
        with open("/proc/stat") as stat:
            lines = [line.split() for line in stat if line.startswith("cpu") and not line.startswith("cpu ")]
    except OSError:
        return None
    times = []
    for fields in lines:
        values = [int(v) for v in fields[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        times.append((idle, sum(values)))
    return times or None


def idle_cores(interval: float = 0.1, sample=_cpu_times) -> float | None:
    """How many of this process's CPUs were idle over the next ``interval`` seconds.

    ``None`` where it cannot be told (no /proc/stat). Counts only the CPUs this process
    may run on.
    """
    before = sample()
    if before is None:
        return None
    time.sleep(interval)
    after = sample()
    if after is None or len(after) != len(before):
        return None
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(len(before)))
    idle = 0.0
    for cpu, ((idle0, total0), (idle1, total1)) in enumerate(zip(before, after)):
        if cpu in allowed and total1 > total0:
            idle += (idle1 - idle0) / (total1 - total0)
    return idle


def cpu_threads(requested: int | None = None, idle: float | None = None) -> int:
    """Threads for a fit on the CPU: ``requested`` if given, else as many as there are idle
    cores (at least one, at most PyTorch's current setting).

    On a 2-core machine busy with another fit, two PyTorch threads made each step several
    times slower than one (measured in issue 9: 4.6x): threads that wait for a busy core
    stall every parallel region. ``idle`` is :func:`idle_cores` measured by the caller.

    >>> cpu_threads(3)
    3
    >>> cpu_threads(idle=0.2)
    1
    """
    if requested is not None:
        if requested < 1:
            raise InputError(f"threads must be at least 1, got {requested}")
        return int(requested)
    current = torch.get_num_threads()
    if idle is None:
        return current
    return int(max(1, min(current, round(idle))))


def autotune_convolutions(device: torch.device) -> bool | None:
    """Let cuDNN time its kernels for a fit on a CUDA ``device`` and keep the fastest.

    A fit runs thousands of steps at one image size, so the search pays for itself. The
    setting is process-wide: the caller puts back what this returns (``None``: nothing
    was changed, the device is not CUDA) when its fit ends, so a napari session or a
    script that goes on after the fit keeps its own choice.
    """
    if device.type != "cuda":
        return None
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    return before
