"""Choosing the device a fit runs on, and saying what it is."""

from __future__ import annotations

import os

import torch

from .errors import InputError


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
            return torch.device("cuda", torch.cuda.current_device())
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
        index = device.index if device.index is not None else torch.cuda.current_device()
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
