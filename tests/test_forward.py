import numpy as np
import pytest
import torch

from napari_dip.errors import InputError
from napari_dip.engine.forward import Identity, KnownPixels, LanczosDownsampler, lanczos_kernel


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_lanczos_kernel_is_normalised_symmetric_and_sized(factor):
    kernel = lanczos_kernel(factor)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel[::-1])
    assert kernel.size == 4 * factor - (factor % 2)
    # a low-pass kernel: its peak is at the centre and it has the Lanczos negative lobes
    assert kernel.argmax() in (kernel.size // 2 - 1, kernel.size // 2)
    assert kernel.min() < 0


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_downsampler_output_size(factor):
    model = LanczosDownsampler(factor, channels=3)
    x = torch.rand(1, 3, 16 * factor, 24 * factor)
    y = model(x)
    assert y.shape == (1, 3, 16, 24)
    assert model.image_size((16, 24)) == (16 * factor, 24 * factor)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_downsampler_keeps_constant_images_constant(factor):
    model = LanczosDownsampler(factor, channels=2)
    x = torch.full((1, 2, 8 * factor, 8 * factor), 0.37)
    np.testing.assert_allclose(model(x).numpy(), 0.37, atol=1e-6)


def test_downsampler_aligns_pixel_centres():
    # A linear ramp is reproduced exactly by a symmetric normalised kernel, so the
    # low-resolution value must be the ramp at the low-resolution pixel centre.
    factor = 4
    size = 64
    ramp = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size).expand(1, 1, size, size)
    low = LanczosDownsampler(factor, channels=1)(ramp.contiguous())[0, 0]
    centres = np.arange(size // factor) * factor + (factor - 1) / 2
    # away from the replicated borders
    np.testing.assert_allclose(low[4, 2:-2].numpy(), centres[2:-2], atol=1e-4)


def test_downsampler_suppresses_aliasing():
    # The finest checkerboard cannot be represented after downsampling: a plain
    # subsampler would keep it at full contrast, the anti-aliased one removes it.
    factor = 2
    y, x = np.mgrid[0:32, 0:32]
    board = torch.as_tensor(((x + y) % 2).astype(np.float32))[None, None]
    low = LanczosDownsampler(factor, channels=1)(board)[0, 0, 3:-3, 3:-3]
    assert float(low.max() - low.min()) < 0.05


def test_unsupported_factor_is_rejected():
    with pytest.raises(InputError, match="factor"):
        LanczosDownsampler(5, channels=1)


def test_identity_is_identity():
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(Identity()(x), x)
    assert Identity().image_size((8, 9)) == (8, 9)


def test_known_pixels_removes_holes_from_the_comparison():
    known = np.ones((1, 8, 8), np.float32)
    known[0, 2:4, 2:4] = 0
    model = KnownPixels(known)
    x = torch.rand(1, 3, 8, 8)
    y = model(x)
    assert torch.all(y[:, :, 2:4, 2:4] == 0)  # broadcast over all three channels
    assert torch.equal(y[:, :, 5:, 5:], x[:, :, 5:, 5:])
    observation = torch.full((1, 3, 8, 8), 5.0)
    assert torch.all(model.prepare_observation(observation)[:, :, 2:4, 2:4] == 0)


def test_known_pixels_per_channel():
    known = np.ones((2, 8, 8), np.float32)
    known[1, :4] = 0
    y = KnownPixels(known)(torch.ones(1, 2, 8, 8))
    assert float(y[0, 0].sum()) == 64
    assert float(y[0, 1].sum()) == 32
