"""Switches that trade quality or start-up time for speed per step (issue 9): the network's
``merge_norm`` and ``conv_bias``, and the fit's ``compile`` and ``cuda_graphs``."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_dip.engine import compiled
from napari_dip.engine.fit import FitConfig, Fitter
from napari_dip.engine.forward import Identity
from napari_dip.engine.networks import FAST, SkipNet, SkipNetConfig
from napari_dip.engine.stopping import StoppingConfig
from tiny import TINY_NET, smooth_image

CPU = FitConfig(iterations=6, device="cpu", stopping=StoppingConfig(rule="none"), check_every=3)


def _count(net, kind):
    return sum(isinstance(m, kind) for m in net.modules())


def test_defaults_are_the_reference_networks():
    assert FAST.merge_norm and FAST.conv_bias
    assert SkipNetConfig().merge_norm and SkipNetConfig().conv_bias


def test_without_merge_norm_one_batch_norm_fewer_per_scale():
    with_merge = SkipNet(TINY_NET, 1)
    without = SkipNet(replace(TINY_NET, merge_norm=False), 1)
    assert _count(with_merge, torch.nn.BatchNorm2d) - _count(without, torch.nn.BatchNorm2d) == TINY_NET.scales
    z = torch.rand(1, TINY_NET.input_channels, 32, 32)
    assert without(z).shape == (1, 1, 32, 32)


def test_without_conv_bias_only_the_head_has_a_bias_and_the_function_is_the_same():
    biased = SkipNet(TINY_NET, 2)
    unbiased = SkipNet(replace(TINY_NET, conv_bias=False), 2)
    convs = [m for m in unbiased.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m for m in convs if m.bias is not None] == [unbiased.head]
    # Batch normalisation (training mode) removes each channel's mean, bias included: the
    # same weights without the biases give the same output.
    unbiased.load_state_dict({k: v for k, v in biased.state_dict().items() if k in unbiased.state_dict()})
    with torch.no_grad():
        for m in biased.modules():
            if isinstance(m, torch.nn.Conv2d) and m is not biased.head:
                m.bias.normal_()  # would change the output if it were not normalised away
    z = torch.rand(1, TINY_NET.input_channels, 32, 32)
    torch.testing.assert_close(unbiased(z), biased(z), atol=1e-5, rtol=1e-4)


def test_without_normalisation_convolutions_keep_their_bias():
    net = SkipNet(replace(TINY_NET, normalization="none", conv_bias=False), 1)
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("options", [{"merge_norm": False}, {"conv_bias": False}])
def test_switches_are_deterministic_and_recorded(options):
    network = replace(TINY_NET, **options)
    image = smooth_image(32)[None]
    first = list(Fitter(image, Identity(), network, CPU).run(snapshot_every=6))[-1]
    second = list(Fitter(image, Identity(), network, CPU).run(snapshot_every=6))[-1]
    np.testing.assert_array_equal(first.average, second.average)
    for key, value in options.items():
        assert first.settings["network"][key] == value
    # A configuration saved with these switches can be rebuilt from the record.
    assert SkipNetConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in first.settings["network"].items()}) == network


# -- compile and CUDA graphs: the plumbing, with torch.compile replaced (a real compile
# takes minutes on a CPU) ------------------------------------------------------------------


class _FakeCompile:
    def __init__(self):
        self.calls = []

    def __call__(self, module, **options):
        import os

        self.calls.append({"module": module, "cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"), **options})
        forward_calls = self.forward_calls = []

        def compiled_forward(x):
            forward_calls.append(tuple(x.shape))
            return module(x)

        return compiled_forward


@pytest.fixture
def fake_compile(monkeypatch, tmp_path):
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    import platformdirs

    # The user's cache folder, on any system.
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / "cache" / app))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return fake


def test_compile_off_by_default_calls_nothing(fake_compile):
    fitter = Fitter(smooth_image(32)[None], Identity(), TINY_NET, CPU)
    list(fitter.run(snapshot_every=6))
    assert fake_compile.calls == [] and fitter.settings["compiled"] is None


def test_compile_runs_every_step_through_the_compiled_network_with_a_persistent_cache(fake_compile, tmp_path):
    image = smooth_image(32)[None]
    fitter = Fitter(image, Identity(), TINY_NET, replace(CPU, compile=True))
    snaps = list(fitter.run(snapshot_every=6))
    (call,) = fake_compile.calls
    assert call["module"] is fitter.network and call["mode"] == "default"
    assert len(fake_compile.forward_calls) == CPU.iterations
    # The cache is under the user's cache folder, so the next process finds it.
    assert call["cache"] == str(compiled.cache_dir()) and str(tmp_path / "cache") in call["cache"]
    settings = snaps[-1].settings
    assert settings["fit"]["compile"] is True and settings["compiled"] == "default"
    # Compiling does not change the result (here the "compiled" network is the network).
    plain = list(Fitter(image, Identity(), TINY_NET, CPU).run(snapshot_every=6))[-1]
    np.testing.assert_array_equal(plain.average, snaps[-1].average)


def test_a_cache_folder_chosen_by_the_user_is_kept(fake_compile, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    Fitter(smooth_image(32)[None], Identity(), TINY_NET, replace(CPU, compile=True))
    assert fake_compile.calls[0]["cache"] == str(tmp_path / "mine")


def test_cuda_graphs_are_ignored_off_cuda_and_say_so(fake_compile):
    fitter = Fitter(smooth_image(32)[None], Identity(), TINY_NET, replace(CPU, cuda_graphs=True))
    assert fake_compile.calls == []
    assert fitter.settings["fit"]["cuda_graphs"] is True and fitter.settings["compiled"] is None
    assert fitter.settings["cuda_graphs"] is False and not fitter.graphs


@pytest.mark.parametrize(
    "compile_, graphs, device, expected",
    [
        (False, False, "cuda", None),
        (True, False, "cpu", "default"),
        (True, False, "cuda", "default"),
        # CUDA graphs are a capture of the whole step, not a compile mode.
        (False, True, "cuda", None),
        (True, True, "cuda", "default"),
        (False, True, "cpu", None),
        (True, True, "cpu", "default"),
    ],
)
def test_compile_mode_per_device(compile_, graphs, device, expected):
    config = FitConfig(compile=compile_, cuda_graphs=graphs)
    assert compiled.compile_mode(config, torch.device(device)) == expected


def test_compile_flags_must_be_booleans():
    with pytest.raises(Exception, match="compile"):
        FitConfig(compile="yes")
    with pytest.raises(Exception, match="cuda_graphs"):
        FitConfig(cuda_graphs=1)
    with pytest.raises(Exception, match="channels_last"):
        FitConfig(channels_last="yes")
    # None is each switch's "decide by device" (graphs) or "off" (layout).
    assert FitConfig(cuda_graphs=None, channels_last=None).cuda_graphs is None


# -- benchmarks/step_levers.py: levers by name, timing in one process -----------------------


@pytest.fixture
def step_levers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_levers.py"
    spec = importlib.util.spec_from_file_location("napari_dip_step_levers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levers_combine_by_name_and_unknown_ones_are_refused(step_levers):
    combined = step_levers.lever_config(FAST, "zeros+nomerge")
    assert combined == replace(FAST, padding="zeros", merge_norm=False)
    assert step_levers.lever_config(FAST, "base") == FAST
    with pytest.raises(SystemExit, match="unknown lever"):
        step_levers.lever_config(FAST, "zeros+faster")


def test_levers_are_timed_side_by_side(step_levers):
    result = step_levers.measure(TINY_NET, ["base", "nobias"], size=32, threads=1, steps=2, rounds=2)
    assert set(result) == {"base", "nobias"}
    assert all(len(r["all"]) == 2 and r["seconds"] > 0 for r in result.values())
    assert result["nobias"]["parameters"] < result["base"]["parameters"]


def test_the_unfused_lever_times_the_per_tensor_adam_on_the_same_network(step_levers):
    assert step_levers.lever_config(FAST, "unfused+zeros") == replace(FAST, padding="zeros")
    fused = step_levers.make_fitter(TINY_NET, 32, threads=1, iterations=2)
    unfused = step_levers.make_fitter(TINY_NET, 32, threads=1, iterations=2, unfused=True)
    assert fused.optimizer.defaults["fused"] is True and not unfused.optimizer.defaults["fused"]
    assert [p for g in unfused.optimizer.param_groups for p in g["params"]] == list(unfused.network.parameters())
    with pytest.raises(SystemExit, match="timing levers"):
        step_levers.main(["--quality", "--levers", "base,unfused"])


def test_compile_reaches_the_fit_from_the_command_line_and_the_api(fake_compile, tmp_path):
    import imageio.v3 as iio

    from napari_dip import denoise
    from napari_dip.cli import main
    from napari_dip.io import read_provenance

    image = (smooth_image(32) * 255).astype(np.uint8)
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    iio.imwrite(source, image)
    fast = ["--iterations", "4", "--channels", "4", "--stop", "none", "--device", "cpu", "--quiet"]
    assert main(["denoise", str(source), "-o", str(out), "--compile", *fast]) == 0
    assert len(fake_compile.calls) == 1
    assert read_provenance(out)["compiled"] == "default"
    assert main(["denoise", str(source), "-o", str(tmp_path / "plain.png"), *fast]) == 0
    assert len(fake_compile.calls) == 1 and read_provenance(tmp_path / "plain.png")["compiled"] is None
    denoise(image, iterations=4, channels=4, stopping="none", device="cpu", compile=True)
    assert len(fake_compile.calls) == 2


def test_no_cuda_graphs_reaches_the_fit_from_the_command_line(tmp_path):
    import imageio.v3 as iio

    from napari_dip.cli import main
    from napari_dip.io import read_provenance

    iio.imwrite(tmp_path / "in.png", (smooth_image(32) * 255).astype(np.uint8))
    fast = ["--iterations", "2", "--channels", "4", "--stop", "none", "--device", "cpu", "--quiet"]
    assert main(["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "off.png"), "--no-cuda-graphs", *fast]) == 0
    assert main(["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "default.png"), *fast]) == 0
    assert read_provenance(tmp_path / "off.png")["fit"]["cuda_graphs"] is False
    # Left to the device by default (None: graphs on CUDA); on this CPU none were used.
    default = read_provenance(tmp_path / "default.png")
    assert default["fit"]["cuda_graphs"] is None and default["cuda_graphs"] is False


def test_iter_restore_passes_cuda_graphs_to_the_fit_and_a_cpu_fit_ignores_it(fake_compile):
    from napari_dip.restore import iter_restore

    image = (smooth_image(32) * 255).astype(np.uint8)
    final = [s for s in iter_restore("denoise", image, iterations=3, channels=4, stopping="none", device="cpu",
                                     cuda_graphs=True, snapshot_every=3)][-1]
    assert final.settings["fit"]["cuda_graphs"] is True
    assert final.settings["compiled"] is None and not fake_compile.calls
