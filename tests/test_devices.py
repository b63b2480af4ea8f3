"""Device choice and the CPU thread policy."""

import pytest
import torch

from napari_dip.engine.devices import autotune_convolutions, cpu_threads, idle_cores, resolve_device
from napari_dip.errors import InputError


def test_idle_cores_from_two_samples_of_cpu_times():
    # Two CPUs: the first idle for 90 of 100 jiffies, the second for 10 of 100.
    samples = iter([[(0, 0), (0, 0)], [(90, 100), (10, 100)]])
    idle = idle_cores(interval=0, sample=lambda: next(samples))
    assert idle == pytest.approx(1.0)


def test_idle_cores_unknown_without_proc_stat():
    assert idle_cores(interval=0, sample=lambda: None) is None


def test_thread_policy_follows_idle_cores_within_torchs_setting():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cpu_threads(idle=2.0) == 2
        assert cpu_threads(idle=1.2) == 1  # one core busy: one thread, not two fighting for it
        assert cpu_threads(idle=0.1) == 1  # never zero
        assert cpu_threads(idle=8.0) == 2  # never more than PyTorch was told to use
        assert cpu_threads(idle=None) == 2  # unknown load: PyTorch's own choice
        assert cpu_threads(4, idle=0.0) == 4  # an explicit request wins
        with pytest.raises(InputError):
            cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_a_cpu_fit_sets_its_threads_and_puts_them_back():
    from dataclasses import replace

    import numpy as np

    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from tiny import TINY_NET, smooth_image

    before = torch.get_num_threads()
    seen = []
    config = replace(FitConfig(iterations=2, device="cpu"), threads=1)
    fitter = Fitter(np.moveaxis(smooth_image(32, 1), -1, 0), Identity(), TINY_NET, config)
    for snap in fitter.run(snapshot_every=1):
        seen.append(torch.get_num_threads())
    assert seen == [1, 1]
    assert snap.settings["threads"] == 1
    assert torch.get_num_threads() == before
    with pytest.raises(InputError):
        FitConfig(threads=0)
    with pytest.raises(InputError):
        FitConfig(threads="many")


def test_threads_default_to_torchs_setting_and_auto_follows_idle_cores(monkeypatch):
    import numpy as np

    from napari_dip.engine import fit as fit_module
    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from tiny import TINY_NET, smooth_image

    image = np.moveaxis(smooth_image(32, 1), -1, 0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # The default does not look at the load: the same seed gives the same result.
        monkeypatch.setattr(fit_module, "idle_cores", lambda: pytest.fail("measured the load by default"))
        assert Fitter(image, Identity(), TINY_NET, FitConfig(iterations=1, device="cpu")).threads == 2
        monkeypatch.setattr(fit_module, "idle_cores", lambda: 1.1)
        auto = Fitter(image, Identity(), TINY_NET, FitConfig(iterations=1, device="cpu", threads="auto"))
        assert auto.threads == 1
    finally:
        torch.set_num_threads(before)


def test_unknown_device_is_an_input_error():
    with pytest.raises(InputError):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"


def test_cudnn_kernel_search_is_turned_on_for_cuda_only_and_reported_for_putting_back():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        assert autotune_convolutions(torch.device("cpu")) is None
        assert torch.backends.cudnn.benchmark is False
        assert autotune_convolutions(torch.device("cuda", 0)) is False  # what to put back
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_a_fit_puts_the_cudnn_setting_back_when_it_ends(monkeypatch):
    # No GPU here: the search is switched on as a CUDA fit would, and the fit must leave
    # the process as it found it (a napari session goes on after the fit).
    import numpy as np

    from napari_dip.engine import fit as fit_module
    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from tiny import TINY_NET, smooth_image

    def as_on_cuda(device):
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        return previous

    before = torch.backends.cudnn.benchmark
    monkeypatch.setattr(fit_module, "autotune_convolutions", as_on_cuda)
    try:
        torch.backends.cudnn.benchmark = False
        fitter = Fitter(np.moveaxis(smooth_image(32, 1), -1, 0), Identity(), TINY_NET, FitConfig(iterations=2, device="cpu"))
        seen = [torch.backends.cudnn.benchmark for _ in fitter.run(snapshot_every=1)]
        assert seen == [True, True]
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_resolving_a_cuda_device_does_not_start_cuda(monkeypatch):
    # The napari docks resolve their device on the UI thread: asking for the current
    # device would start CUDA there, seconds of a frozen window on a GPU machine.
    started = {"yes": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started["yes"])

    def current_device():
        assert started["yes"], "asked for the current device before CUDA had started"
        return 1

    monkeypatch.setattr(torch.cuda, "current_device", current_device)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    started["yes"] = True  # once started, another device may have been made current
    assert resolve_device("auto") == torch.device("cuda", 1)
