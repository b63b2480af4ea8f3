"""Small networks and images that keep engine tests fast on a 2-core CPU."""

import numpy as np

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
