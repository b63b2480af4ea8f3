"""Presets: ``auto`` follows the device, ``paper`` and ``fast`` are themselves."""

import pytest
import torch

from napari_dip.engine import presets
from napari_dip.errors import InputError
from napari_dip.engine.presets import DEFAULT_PRESET, resolve_preset, settings_for


def pretend_device(monkeypatch, device):
    monkeypatch.setattr(presets, "resolve_device", lambda name="auto": torch.device(device))


def test_auto_is_the_default_and_means_fast_on_a_cpu():
    assert DEFAULT_PRESET == "auto"
    assert resolve_preset("auto", "cpu") == "fast"
    net, _ = settings_for("denoise", "auto", device="cpu")
    assert net.channels_down[0] == 32  # fast's denoising network
    net, _ = settings_for("super-resolve", "auto", device="cpu", factor=4)
    assert net.channels_down[0] == 48


@pytest.mark.parametrize("device,expected", [("cuda:0", "paper"), ("mps", "fast"), ("cpu", "fast")])
def test_auto_follows_the_device(monkeypatch, device, expected):
    pretend_device(monkeypatch, device)
    assert resolve_preset("auto") == expected
    net, _ = settings_for("inpaint", "auto")
    assert net.channels_down[0] == (128 if expected == "paper" else 48)


def test_auto_on_a_machine_whose_cuda_is_available(monkeypatch):
    # The real device resolution, with torch told that a GPU is there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_preset("auto", "auto") == "paper"
    assert resolve_preset("auto", "cpu") == "fast"  # an explicit CPU wins


def test_explicit_presets_ignore_the_device(monkeypatch):
    pretend_device(monkeypatch, "cuda:0")
    assert resolve_preset("fast") == "fast"
    pretend_device(monkeypatch, "cpu")
    assert resolve_preset("paper") == "paper"


def test_unknown_preset_and_device_are_explained():
    with pytest.raises(InputError, match="unknown preset 'huge'.*auto"):
        resolve_preset("huge")
    with pytest.raises(InputError, match="cuda"):
        resolve_preset("auto", "cuda:7")


def test_auto_recorrupts_the_paper_network_on_cuda_and_paper_named_keeps_the_papers_way(monkeypatch):
    from napari_dip.engine.networks import PAPER

    pretend_device(monkeypatch, "cuda:0")
    net, auto = settings_for("denoise", "auto", noise_sigma=0.1)
    assert net == PAPER and auto.recorrupt_sigma == 0.1 and auto.reg_noise_std == 0.0
    assert auto.adam_beta2 == 0.95
    net, paper = settings_for("denoise", "paper", noise_sigma=0.1)
    assert net == PAPER and paper.recorrupt_sigma is None and paper.reg_noise_std > 0
    assert paper.adam_beta2 == 0.999
    # Photon-limited noise through the transform keeps Adam's usual beta2 on any network.
    _, photon = settings_for("denoise", "auto", noise_sigma=0.1, photon_limited=True)
    assert photon.recorrupt_sigma == 0.1 and photon.adam_beta2 == 0.999
    # Refused, or an input jitter asked for: the paper's way on the same network.
    for options in ({"recorrupt": False}, {"reg_noise_std": 0.05}):
        _, plain = settings_for("denoise", "auto", noise_sigma=0.1, **options)
        assert plain.recorrupt_sigma is None and plain.adam_beta2 == 0.999
    assert not presets.recorrupts_by_default("super-resolve", "auto", False)
    with pytest.raises(InputError, match="unknown preset"):
        presets.recorrupts_by_default("denoise", "huge", False)


def test_fast_fits_super_resolution_and_inpainting_with_a_short_memory_and_a_shorter_budget(monkeypatch):
    # Adam's beta2 0.95 reached the results in a fraction of the paper's iterations, and
    # ES-WMV then no longer fired: fast's budget is what ends these fits.
    for task, factor, paper_budget, fast_budget in [("super-resolve", 4, 2000, 800), ("inpaint", None, 6000, 1000)]:
        _, paper = settings_for(task, "paper", factor=factor)
        assert (paper.iterations, paper.adam_beta2) == (paper_budget, 0.999)
        _, fast = settings_for(task, "fast", factor=factor)
        assert (fast.iterations, fast.adam_beta2) == (fast_budget, 0.95)
        assert fast.learning_rate == paper.learning_rate and fast.reg_noise_std == paper.reg_noise_std
        # The caller's settings win.
        _, given = settings_for(task, "fast", factor=factor, iterations=123, adam_beta2=0.99)
        assert (given.iterations, given.adam_beta2) == (123, 0.99)
    # Every factor takes the same share of the paper's budget (x8's is 4000).
    for factor, paper_budget, fast_budget in [(2, 2000, 800), (3, 2000, 800), (8, 4000, 1600)]:
        assert settings_for("super-resolve", "paper", factor=factor)[1].iterations == paper_budget
        _, fit = settings_for("super-resolve", "fast", factor=factor)
        assert (fit.iterations, fit.adam_beta2) == (fast_budget, 0.95)
    # auto follows the network it picks: the paper's schedule on CUDA, fast's elsewhere.
    pretend_device(monkeypatch, "cuda:0")
    assert settings_for("inpaint", "auto")[1].iterations == 6000
    pretend_device(monkeypatch, "cpu")
    assert settings_for("inpaint", "auto")[1].iterations == 1000
    # Denoising keeps the paper's budget in both (its own rules stop it).
    assert settings_for("denoise", "fast")[1].iterations == settings_for("denoise", "paper")[1].iterations == 3000


def test_a_restoration_says_the_budget_its_fit_runs():
    # The command line's bar starts from it: the preset's (fast's shorter inpainting
    # budget, the paper's), or the caller's.
    import numpy as np

    from napari_dip.restore import iter_restore

    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    holes = np.zeros((32, 32), bool)
    holes[::4] = True
    for options, budget in [({"preset": "fast"}, 1000), ({"preset": "paper"}, 6000),
                            ({"preset": "fast", "iterations": 7}, 7)]:
        stream = iter_restore("inpaint", image, mask=holes, device="cpu", **options)
        assert stream.iterations == budget, options
        stream.close()
