"""Optional compilation of the network for a fit with ``torch.compile``.

Off by default (:class:`~napari_dip.engine.fit.FitConfig` ``compile``; CUDA graphs are a
separate switch, :mod:`napari_dip.engine.graphs`). Measured on a 2-core CPU (issue 9, BENCHMARKS.md "Cheaper steps"),
compiling the fast network gave 1.07-1.14x per step, but the first compile at 128² took
94 s (3.8 s with the cache of an earlier run); on a GPU the balance may differ (unmeasured
here: no GPU was lent).

Inductor keeps compiled kernels in a cache folder (by default a temporary one, lost at
reboot); here it is a folder in the user's cache (:func:`cache_dir`), so a later fit of the
same network and image size, in another process, reuses them instead of compiling again.
A ``TORCHINDUCTOR_CACHE_DIR`` the user set is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def cache_dir() -> Path:
    """Where inductor's compiled kernels are kept across runs: ``<user cache>/napari-dip/inductor``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-dip")) / "inductor"


def compile_mode(config, device: torch.device) -> str | None:
    """The ``torch.compile`` mode a fit uses, or ``None`` when it runs the network eagerly.

    ``compile`` is inductor's default mode on every device. CUDA graphs are not compile's
    ``reduce-overhead`` mode (on an H200 it compiled for most of a minute, 2026-11-26) but
    a capture of the whole step (:mod:`napari_dip.engine.graphs`).
    """
    if config.compile:
        return "default"
    return None


def compile_network(network: torch.nn.Module, mode: str):
    """``network`` compiled by inductor in ``mode``, its kernels cached in :func:`cache_dir`.

    The result shares the network's parameters: loading a state dict into ``network`` (a
    backtrack, a warm start) changes what the compiled form computes.
    """
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    # One image size for the whole fit: no dynamic shapes, no recompiles.
    return torch.compile(network, mode=mode, dynamic=False)
