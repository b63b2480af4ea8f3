"""The background warm-up of a device (napari_dip.engine.warm)."""

import threading

import numpy as np
import pytest
import torch

from napari_dip import denoise
from napari_dip.engine import warm
from tiny import smooth_image


@pytest.fixture
def fresh_warm_up(monkeypatch):
    # Each test starts as a new process would: no warm-up started, none failed.
    monkeypatch.setattr(warm, "_threads", {})
    monkeypatch.setattr(warm, "failures", {})


def test_the_warm_up_draws_no_random_numbers(fresh_warm_up):
    # A fit seeds the global generator before building its network: a warm-up in another
    # thread that drew from it would change the fit's result.
    torch.manual_seed(5)
    before = torch.get_rng_state()
    warm.warm_up(torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_device_is_warmed_up_once_per_process(fresh_warm_up, monkeypatch):
    calls = []
    monkeypatch.setattr(warm, "warm_up", lambda device: calls.append(str(device)))
    first = warm.start_warm_up(torch.device("cpu"))
    again = warm.start_warm_up(torch.device("cpu"))
    first.join(10)
    assert again is first and not first.is_alive()
    assert calls == ["cpu"] and warm.failures == {}


def test_a_failed_warm_up_is_recorded_not_raised(fresh_warm_up, monkeypatch):
    def broken(device):
        raise RuntimeError("no driver")

    monkeypatch.setattr(warm, "warm_up", broken)
    caught = []
    monkeypatch.setattr(threading, "excepthook", caught.append)
    warm.start_warm_up(torch.device("cpu")).join(10)
    assert warm.failures == {"cpu": "RuntimeError: no driver"} and caught == []


def test_a_warm_up_between_a_fits_seed_and_its_network_changes_nothing(fresh_warm_up, monkeypatch):
    # The worst moment for a warm-up thread: right after the fit seeded the global
    # generator, before its network draws its weights.
    image = np.clip(smooth_image(24) + np.random.default_rng(1).normal(0, 0.1, (24, 24)), 0, 1).astype(np.float32)
    options = dict(preset="fast", channels=8, iterations=15, device="cpu", seed=3)
    alone = denoise(image, **options)
    seed = torch.manual_seed

    def seed_then_warm_up(value):
        generator = seed(value)
        warm.warm_up(torch.device("cpu"))
        return generator

    monkeypatch.setattr(torch, "manual_seed", seed_then_warm_up)
    np.testing.assert_array_equal(denoise(image, **options), alone)


def test_a_fit_waits_for_its_devices_warm_up(fresh_warm_up, monkeypatch):
    import time

    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from tiny import TINY_NET

    finished = []

    def slow_warm_up(device):
        time.sleep(0.5)
        finished.append(str(device))

    monkeypatch.setattr(warm, "warm_up", slow_warm_up)
    warm.start_warm_up(torch.device("cpu"))
    Fitter(smooth_image(16)[None].astype(np.float32), Identity(), TINY_NET, FitConfig(iterations=2, device="cpu"))
    assert finished == ["cpu"]
