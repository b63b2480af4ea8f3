"""Which local cluster a batch starts (napari_dip.batch.cluster): one worker per GPU with
dask-cuda's LocalCUDACluster where it is installed and sees GPUs, else single-threaded
CPU workers. There is no GPU on the test machines: dask-cuda is a fake module here, with a
device count the test chooses."""

import sys
import types

import imageio.v3 as iio
import numpy as np
import pytest

from napari_dip.batch import cluster, restore_files
from napari_dip.errors import InputError


class FakeLocalCUDACluster:
    """Records how it was made, and the Dask settings in force then (the nannies read
    ``pre-spawn-environ`` when they start, i.e. inside the constructor)."""

    made: list = []

    def __init__(self, **kwargs):
        import dask

        self.kwargs = kwargs
        self.environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        self.profiler = dask.config.get("distributed.worker.profile.enabled")
        type(self).made.append(self)


class FakeLocalCluster(FakeLocalCUDACluster):
    made: list = []


def _install_fake_dask_cuda(monkeypatch, gpus):
    """A ``dask_cuda`` whose ``utils.get_n_gpus`` says ``gpus`` (or raises it, if an
    exception, as NVML does without a driver)."""
    module = types.ModuleType("dask_cuda")
    utils = types.ModuleType("dask_cuda.utils")

    def get_n_gpus():
        if isinstance(gpus, Exception):
            raise gpus
        return gpus

    utils.get_n_gpus = get_n_gpus
    module.utils = utils
    module.LocalCUDACluster = FakeLocalCUDACluster
    monkeypatch.setitem(sys.modules, "dask_cuda", module)
    monkeypatch.setitem(sys.modules, "dask_cuda.utils", utils)
    FakeLocalCUDACluster.made = []


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 2)


def test_without_dask_cuda_or_a_gpu_one_cpu_worker_per_core(monkeypatch, two_cores):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import dask_cuda raises ImportError
    monkeypatch.setattr(cluster, "torch_cuda_device_count", lambda: 0)
    plan = cluster.plan_local_cluster("auto", None)
    assert (plan.kind, plan.workers, plan.reason) == ("cpu", 2, "dask-cuda is not installed")


@pytest.mark.parametrize("device, torch_gpus", [("auto", 1), ("auto", 2), ("cuda", 1), ("cuda", 0)])
def test_gpu_fits_without_dask_cuda_take_turns_in_one_worker(monkeypatch, device, torch_gpus):
    # Not one worker per core all on one GPU (16 fits at once on a 16-core GPU machine).
    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 16)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    monkeypatch.setattr(cluster, "torch_cuda_device_count", lambda: torch_gpus)
    plan = cluster.plan_local_cluster(device, None)
    assert (plan.kind, plan.workers) == ("cpu", 1)
    assert "pip install dask-cuda" in plan.reason
    assert cluster.plan_local_cluster(device, 3).workers == 3  # asked for: given


@pytest.mark.parametrize("gpus", [0, RuntimeError("NVML Shared Library Not Found")])
def test_dask_cuda_without_a_gpu_gives_cpu_workers(monkeypatch, two_cores, gpus):
    _install_fake_dask_cuda(monkeypatch, gpus)
    plan = cluster.plan_local_cluster("auto", None)
    assert (plan.kind, plan.workers, plan.reason) == ("cpu", 2, "dask-cuda sees no CUDA device")


def test_dask_cuda_with_gpus_gives_one_worker_per_gpu(monkeypatch, two_cores):
    _install_fake_dask_cuda(monkeypatch, 4)
    for device in ("auto", "cuda", " CUDA", None):
        plan = cluster.plan_local_cluster(device, None)
        assert (plan.kind, plan.workers) == ("cuda", 4), device
    assert cluster.plan_local_cluster("auto", 2).workers == 2  # the first two GPUs
    with pytest.raises(InputError, match="there are 4 GPU"):
        cluster.plan_local_cluster("auto", 5)


@pytest.mark.parametrize("device, workers, reason", [
    ("cpu", 2, "fits on the CPU"),
    ("cuda:1", 1, "every fit on cuda:1, one at a time"),
    ("mps", 1, "every fit on mps, one at a time"),
])
def test_a_device_the_user_names_keeps_cpu_style_workers(monkeypatch, two_cores, device, workers, reason):
    _install_fake_dask_cuda(monkeypatch, 4)
    plan = cluster.plan_local_cluster(device, None)
    assert (plan.kind, plan.workers, plan.reason) == ("cpu", workers, reason)
    assert cluster.plan_local_cluster(device, 2).workers == 2


def test_the_cuda_plan_starts_a_local_cuda_cluster_on_loopback(monkeypatch):
    _install_fake_dask_cuda(monkeypatch, 2)
    started = cluster.start_local_cluster(cluster.plan_local_cluster("auto", None))
    assert FakeLocalCUDACluster.made == [started]
    assert started.kwargs["n_workers"] == 2
    assert started.kwargs["threads_per_worker"] == 1
    assert started.kwargs["host"] == "127.0.0.1"
    # The workers keep glibc's malloc behaviour and run no profiler, as on the CPU cluster.
    assert started.environ.get("MALLOC_TRIM_THRESHOLD_") is None
    assert started.profiler is False


def test_the_cpu_plan_starts_single_threaded_worker_processes_without_profiler(monkeypatch, two_cores):
    import distributed

    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    FakeLocalCluster.made = []
    monkeypatch.setattr(distributed, "LocalCluster", FakeLocalCluster)
    started = cluster.start_local_cluster(cluster.plan_local_cluster("auto", None))
    assert FakeLocalCluster.made == [started]
    assert {k: started.kwargs[k] for k in ("n_workers", "threads_per_worker", "processes", "host")} == {
        "n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1"}
    assert started.environ.get("MALLOC_TRIM_THRESHOLD_") is None
    assert started.profiler is False
    import dask

    assert dask.config.get("distributed.worker.profile.enabled") is True  # only for this cluster's workers


def test_restore_files_hands_the_fit_device_to_the_choice(monkeypatch, tmp_path):
    """The batch's own path: its ``device`` option decides the cluster (stopped at the start
    of the cluster: nothing is fitted)."""
    _install_fake_dask_cuda(monkeypatch, 2)
    data = tmp_path / "in"
    data.mkdir()
    iio.imwrite(data / "a.png", np.zeros((32, 32), np.uint8))
    plans = []

    class Stop(Exception):
        pass

    def record_and_stop(plan):
        plans.append(plan)
        raise Stop

    monkeypatch.setattr(cluster, "start_local_cluster", record_and_stop)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    for device in ("auto", "cpu"):
        with pytest.raises(Stop):
            restore_files(data, task="denoise", out=tmp_path / device, device=device, progress=False)
    assert [(p.kind, p.workers) for p in plans] == [("cuda", 2), ("cpu", plans[1].workers)]
    assert plans[1].reason == "fits on the CPU"


def test_local_workers_leave_ctrl_c_to_the_client_even_when_started_again():
    # A terminal's Ctrl-C reaches every process of the group; the client stops the fits.
    import signal

    from distributed import Client

    from napari_dip.batch.run import _client

    before = signal.getsignal(signal.SIGINT)
    with _client(None, 1, "cpu") as client:
        assert isinstance(client, Client)
        assert list(client.run(lambda: str(signal.getsignal(signal.SIGINT))).values()) == [str(signal.SIG_IGN)]
        client.restart()  # the nanny starts a new worker process: the plugin sets it up too
        assert list(client.run(lambda: str(signal.getsignal(signal.SIGINT))).values()) == [str(signal.SIG_IGN)]
    assert signal.getsignal(signal.SIGINT) is before  # the client's own handler is untouched
