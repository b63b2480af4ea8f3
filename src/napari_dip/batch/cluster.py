"""Which local Dask cluster a batch starts when it is given no scheduler.

* GPUs: where ``dask-cuda`` is installed and CUDA devices are visible, and the fit's
  ``device`` lets the batch choose (``auto`` or ``cuda``), a ``dask_cuda.LocalCUDACluster``
  with one worker per GPU; each worker sees only its own GPU (``CUDA_VISIBLE_DEVICES``
  starts with it), so ``cuda`` in that worker is its GPU and the fits of two workers never
  share one. ``workers=N`` uses the first N GPUs.
* Fits on a GPU without ``dask-cuda`` (it is not installed, and ``device`` is ``cuda`` or
  ``auto`` on a machine where PyTorch sees a GPU), or on a GPU the user names (``cuda:1``,
  ``mps``): one worker, so that the fits take turns on that GPU instead of one per core
  sharing it (16 at once on a 16-core GPU machine; a paper-network fit at 512² peaked at
  9 GiB on an H200, 2026-11-26). ``workers=N`` still starts N.
* Otherwise a ``LocalCluster`` of single-threaded worker processes, one per core
  (``workers=N`` to choose): the cores work on different images.

``dask-cuda`` is not a dependency of napari-dip (``pip install dask-cuda`` where there are
GPUs).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalClusterPlan:
    """What to start: ``kind`` is ``"cuda"`` (``LocalCUDACluster``) or ``"cpu"``
    (``LocalCluster``), with ``workers`` worker processes; ``reason`` says why, for a person."""

    kind: str
    workers: int
    reason: str


def cuda_device_count(dask_cuda) -> int:
    """CUDA devices ``dask_cuda`` sees (``CUDA_VISIBLE_DEVICES``, else NVML); 0 when it
    cannot tell (no driver, no GPU). Asked of dask-cuda, not torch, so the process that runs
    the batch does not import torch just to decide."""
    try:
        return max(int(dask_cuda.utils.get_n_gpus()), 0)
    except Exception:  # noqa: BLE001 - NVML missing or failing means: no usable GPU here
        return 0


def torch_cuda_device_count() -> int:
    """CUDA devices PyTorch sees (0 when it cannot tell); asked only where dask-cuda is
    missing, to learn whether ``auto`` fits will run on a GPU."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means: no usable GPU here
        return 0


def _import_dask_cuda():
    try:
        import dask_cuda
        import dask_cuda.utils  # noqa: F401 - get_n_gpus lives there
    except ImportError:
        return None
    return dask_cuda


def plan_local_cluster(device: str | None = "auto", workers: int | None = None) -> LocalClusterPlan:
    """The local cluster for fits on ``device`` with ``workers`` workers (``None``: one
    per GPU, or one per core)."""
    device = (device or "auto").strip().lower()
    cores = os.cpu_count() or 1
    if device == "cpu":
        return LocalClusterPlan("cpu", workers or cores, "fits on the CPU")
    if device not in ("auto", "cuda"):
        return LocalClusterPlan("cpu", workers or 1, f"every fit on {device}, one at a time")
    dask_cuda = _import_dask_cuda()
    if dask_cuda is None:
        if device == "cuda" or torch_cuda_device_count() > 0:
            return LocalClusterPlan("cpu", workers or 1, "dask-cuda is not installed: one worker, its fits on the "
                                                         "GPU one at a time (pip install dask-cuda for one per GPU)")
        return LocalClusterPlan("cpu", workers or cores, "dask-cuda is not installed")
    gpus = cuda_device_count(dask_cuda)
    if gpus == 0:
        return LocalClusterPlan("cpu", workers or cores, "dask-cuda sees no CUDA device")
    if workers and workers > gpus:
        from ..errors import InputError

        raise InputError(f"--workers {workers}: there are {gpus} GPU(s), one worker each; use --workers {gpus} "
                         "or fewer, or --device cpu for CPU workers")
    return LocalClusterPlan("cuda", workers or gpus, f"one worker per GPU ({gpus} visible)")


def start_local_cluster(plan: LocalClusterPlan):
    """Start the cluster ``plan`` says, on the loopback interface, one thread per worker
    (a worker runs one fit at a time); the caller closes it (it is a context manager).

    Dask's nannies set ``MALLOC_TRIM_THRESHOLD_`` in their workers, which switches off
    glibc's adaptive mmap threshold: every large tensor of every step is then a fresh mmap
    with page faults: a 100-iteration 128² fit on one thread took 17.1 s with it against
    10.1 s without (2-core CPU, 2026-11-26). napari-dip's workers keep glibc's default.

    The workers' statistical profiler is off: it samples the running task's stack every
    10 ms for the dashboard, which this cluster does not serve, and on a CPU whose every core
    runs a fit it took time from them: 100-iteration 128² fits after each worker's first
    took 11.7-12.5 s with it and 10.7-11.5 s without (two workers, 2-core CPU, 2026-11-26).
    """
    import dask

    options = dict(n_workers=plan.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                   silence_logs=logging.ERROR)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.worker.profile.enabled": False}):
        if plan.kind == "cuda":
            dask_cuda = _import_dask_cuda()
            return dask_cuda.LocalCUDACluster(**options)
        from distributed import LocalCluster

        return LocalCluster(processes=True, **options)


def ignore_ctrl_c_in_workers(client) -> None:
    """Make the local cluster's workers, and any the nanny starts again later, ignore Ctrl-C.

    A terminal sends Ctrl-C (SIGINT) to the whole process group, the worker processes
    included: each printed its own KeyboardInterrupt traceback before the client's one-line
    summary. The client alone handles it, stopping the fits through their cancel channel.
    """
    client.register_plugin(_ignore_ctrl_c_plugin_class()())


def _ignore_ctrl_c_plugin_class():
    # Made here, not at import: distributed is imported only when a batch runs. Dask sends
    # the plugin to the workers with cloudpickle, which takes a class made in a function.
    from distributed.diagnostics.plugin import WorkerPlugin

    class IgnoreCtrlC(WorkerPlugin):
        name = "napari-dip-ignore-ctrl-c"

        def setup(self, worker):
            import signal
            import threading

            # A worker's event loop, where plugins are set up, runs in its main thread.
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreCtrlC

