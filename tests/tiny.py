"""Small networks and images that keep engine tests fast on a 2-core CPU."""

import numpy as np

from napari_dip.engine.forward import Identity
from napari_dip.engine.networks import SkipNetConfig

#: Three scales of 8 channels: a few thousand parameters, milliseconds per step at 32x32.
TINY_NET = SkipNetConfig(
    input_channels=8,
    channels_down=(8, 8, 8),
    channels_up=(8, 8, 8),
    channels_skip=(2, 2, 2),
)

#: Settings for the public API that use the tiny network on the CPU.
TINY = {"network": TINY_NET, "device": "cpu"}


def smooth_image(size=32, channels=None, seed=0):
    """A smooth float32 test image in [0, 1] (2D, or channels-last when ``channels``)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    planes = []
    for _ in range(channels or 1):
        a, b = rng.uniform(1, 3, 2)
        planes.append(0.5 + 0.4 * np.sin(a * np.pi * x) * np.cos(b * np.pi * y))
    image = np.stack(planes, axis=-1) if channels else planes[0]
    return image.astype(np.float32)


def noisy_grey(seed: int, size: int = 32) -> np.ndarray:
    """An 8-bit :func:`smooth_image` with Gaussian noise (sigma 0.08 of the range)."""
    rng = np.random.default_rng(seed)
    image = smooth_image(size, seed=seed) + rng.normal(0, 0.08, (size, size))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def png_folder(root, count: int, name: str = "in"):
    """A folder ``root/name`` of ``count`` :func:`noisy_grey` PNGs, ``img0.png``, ...."""
    import imageio.v3 as iio

    folder = root / name
    folder.mkdir()
    for i in range(count):
        iio.imwrite(folder / f"img{i}.png", noisy_grey(i))
    return folder


def photon_limited(size: int = 48, seed: int = 0) -> np.ndarray:
    """A 16-bit image with Poisson-Gaussian noise: baseline 100, gain 2, read-out sigma 3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    signal = 20 + 800 * (0.5 + 0.45 * np.sin(xx / 5.0) * np.cos(yy / 6.0))
    return np.round(100 + 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 3, signal.shape)).astype(np.uint16)


def run_widget(qtbot, widget, timeout_ms: int = 60_000):
    """Start a task widget's fit and wait for it to end."""
    widget.start()
    assert widget.run_state is not None, widget.status
    qtbot.waitUntil(lambda: widget.run_state is None, timeout=timeout_ms)


def takes_ctrl_c() -> None:
    """``subprocess.Popen(..., preexec_fn=takes_ctrl_c)``: the child answers Ctrl-C (SIGINT)
    as a program started from a terminal does. A test run started in the background (``&``
    in a script, ``nohup``) ignores SIGINT, its children inherit that, and Python then
    never raises KeyboardInterrupt: a test of the interruption would see the batch finish."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CountingModel(Identity):
    """Identity forward model that counts its calls and can poison one of them with NaN
    (a blow-up a fit must back out of)."""

    def __init__(self, poison_at=None):
        super().__init__()
        self.calls = 0
        self.poison_at = poison_at

    def forward(self, x):
        self.calls += 1
        return x * float("nan") if self.calls == self.poison_at else x


def diverging_at(fitter_class, fit_number):
    """A subclass of ``fitter_class`` (the engine's ``Fitter``) whose ``fit_number``-th fit
    in this process, counted from 1 by ``made``, diverges past rescue as the engine says."""

    class Diverging(fitter_class):
        made = 0

        def run(self, *args, **kwargs):
            Diverging.made += 1
            if Diverging.made == fit_number:
                raise FloatingPointError("the fit diverged 21 times in a row; lower the learning rate")
            yield from super().run(*args, **kwargs)

    return Diverging
