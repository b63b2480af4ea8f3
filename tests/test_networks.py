import pytest
import torch

from napari_dip.errors import InputError
from napari_dip.engine.networks import FAST, PAPER, SkipNet, SkipNetConfig, count_parameters
from tiny import TINY_NET


def test_paper_network_matches_the_published_size():
    # The paper's denoising network has about 2.2 M parameters (3 output channels).
    assert 2.1e6 < count_parameters(SkipNet(PAPER, 3)) < 2.3e6
    assert PAPER.scales == 5 and PAPER.channels_skip == (4,) * 5 and PAPER.upsample_mode == "bilinear"
    assert count_parameters(SkipNet(FAST, 3)) < count_parameters(SkipNet(PAPER, 3)) / 5


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_output_channels_and_range(channels):
    net = SkipNet(TINY_NET, channels)
    z = torch.rand(1, TINY_NET.input_channels, 32, 40)
    out = net(z).detach()
    assert out.shape == (1, channels, 32, 40)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_without_sigmoid_output_is_unbounded_linear_head():
    cfg = SkipNetConfig(**{**TINY_NET.to_dict(), "output_sigmoid": False})
    net = SkipNet(cfg, 1)
    with torch.no_grad():
        net.head.bias.fill_(5.0)
    assert float(net(torch.rand(1, 8, 32, 32)).detach().min()) > 1


@pytest.mark.parametrize("size,expected", [(17, 64), (64, 64), (65, 96), (100, 128)])
def test_padded_size_for_odd_and_small_sizes(size, expected):
    assert PAPER.padded_size(size) == expected  # multiples of 32, coarsest scale >= 2 pixels


@pytest.mark.parametrize(
    "options",
    [
        {"upsample_mode": "nearest"},
        {"activation": "relu", "normalization": "none", "padding": "zeros"},
        {"kernel_down": 5, "kernel_up": 5},
        {"channels_skip": (0, 0, 0)},
    ],
)
def test_configurable_variants_run(options):
    cfg = SkipNetConfig(**{**TINY_NET.to_dict(), **options})
    size = cfg.padded_size(20)
    out = SkipNet(cfg, 2)(torch.rand(1, 8, size, size))
    assert out.shape == (1, 2, size, size)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"channels_up": (8, 8)}, "same length"),
        ({"kernel_down": 4}, "odd"),
        ({"upsample_mode": "area"}, "upsample_mode"),
        ({"channels_down": (0, 8, 8)}, "positive"),
    ],
)
def test_invalid_configurations_are_explained(options, message):
    with pytest.raises(InputError, match=message):
        SkipNetConfig(**{**TINY_NET.to_dict(), **options})


def test_replicas_side_by_side_are_the_independent_networks():
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(SkipNet(TINY_NET, 2))
    combined = SkipNet.side_by_side(nets)
    assert count_parameters(combined) == 3 * count_parameters(nets[0])
    inputs = [torch.rand(1, TINY_NET.input_channels, 32, 32) for _ in nets]
    with torch.no_grad():
        together = combined(torch.cat(inputs, dim=1))
        for k, (net, z) in enumerate(zip(nets, inputs)):
            torch.testing.assert_close(together[:, 2 * k : 2 * k + 2], net(z), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pad", [1, 2, 3])
def test_sliced_reflection_padding_is_torchs_with_the_same_gradient(pad):
    from torch.nn import functional as F

    from napari_dip.engine.slice_ops import reflect_pad

    x = torch.rand(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    ours, theirs = reflect_pad(x, pad), F.pad(x, (pad,) * 4, mode="reflect")
    assert torch.equal(ours, theirs)
    with pytest.raises(ValueError):  # as F.pad refuses: a side of at most `pad` pixels has nothing to mirror
        reflect_pad(torch.rand(1, 1, pad, 9), pad)
    weights = torch.rand_like(ours)
    (mine,) = torch.autograd.grad((ours * weights).sum(), x)
    (torchs,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.allclose(mine, torchs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 3, 5), (2, 4, 8, 8)])
def test_sliced_bilinear_upsampling_is_torchs_with_the_same_gradient(shape):
    from torch.nn import functional as F

    from napari_dip.engine.slice_ops import bilinear_up2

    x = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
    ours = bilinear_up2(x)
    theirs = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    weights = torch.rand_like(ours)
    (mine,) = torch.autograd.grad((ours * weights).sum(), x)
    (torchs,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.allclose(mine, torchs, rtol=0, atol=1e-12)


def test_the_slice_ops_network_is_the_same_network():
    """Same weights from the same seed, same state-dict keys, the same outputs and weight
    gradients to float rounding (float64)."""
    sliced_config = SkipNetConfig(**{**TINY_NET.to_dict(), "slice_ops": True})
    torch.manual_seed(0)
    plain = SkipNet(TINY_NET, 2).double()
    torch.manual_seed(0)
    sliced = SkipNet(sliced_config, 2).double()
    assert plain.state_dict().keys() == sliced.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), sliced.state_dict().values()))
    assert any(type(m).__name__ == "BilinearUp2" for m in sliced.modules())
    assert any(type(m).__name__ == "SlicePaddedConv2d" for m in sliced.modules())
    z = torch.rand(1, TINY_NET.input_channels, 32, 32, dtype=torch.float64)
    target = torch.rand(1, 2, 32, 32, dtype=torch.float64)
    outputs, grads = [], []
    for net in (plain, sliced):
        out = net(z)
        loss = ((out - target) ** 2).mean()
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
        outputs.append(out.detach())
    assert torch.allclose(outputs[0], outputs[1], rtol=0, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*grads))
