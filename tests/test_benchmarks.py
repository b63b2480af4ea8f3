"""Smoke tests of benchmarks/quality.py: its metrics, degradations and one tiny end-to-end run.

The benchmark is a script, not part of the package; it is imported from its file path.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("napari_dip_quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/pickle-free, but keeps tracebacks readable
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_y_channel_is_bt601_studio_range(quality):
    white = np.ones((8, 8, 3))
    black = np.zeros((8, 8, 3))
    assert np.allclose(quality.y_channel(white), 235 / 255)
    assert np.allclose(quality.y_channel(black), 16 / 255)
    # Pure green weighs 128.553 / 255 of the range above the offset.
    green = np.zeros((2, 2, 3))
    green[..., 1] = 1.0
    assert np.allclose(quality.y_channel(green), (16 + 128.553) / 255)
    # A grey image is taken as R = G = B.
    grey = np.full((4, 4), 0.5)
    assert np.allclose(quality.y_channel(grey), quality.y_channel(np.stack([grey] * 3, -1)))


def test_y_psnr_known_value_and_shaved_border(quality):
    reference = np.full((32, 32, 3), 0.4)
    shifted = reference + 0.1  # Y moves by 219 * 0.1 / 255 everywhere
    expected = -20 * math.log10(219 * 0.1 / 255)
    assert quality.metrics_y(reference, shifted)["psnr"] == pytest.approx(expected, abs=1e-6)

    # Differences only within the 4 px border do not count; one pixel inside does.
    border_only = reference.copy()
    border_only[:4] = 1.0
    border_only[:, -4:] = 0.0
    assert quality.metrics_y(reference, border_only)["psnr"] == math.inf
    inside = reference.copy()
    inside[4, 4] = 1.0
    assert math.isfinite(quality.metrics_y(reference, inside)["psnr"])


def test_psnr_matches_definition(quality):
    a = np.zeros((10, 10))
    b = np.full((10, 10), 0.1)
    assert quality.psnr(a, b) == pytest.approx(20.0)
    assert quality.ssim(a + 0.5, a + 0.5) == pytest.approx(1.0)


def test_random_mask_is_exact_and_seeded(quality):
    rng = quality.image_seed(0, "Heide11", "house", "random50")
    holes = quality.random_mask((31, 17), 0.5, rng)
    assert holes.dtype == bool and holes.shape == (31, 17)
    assert holes.sum() == round(0.5 * 31 * 17)
    again = quality.random_mask((31, 17), 0.5, quality.image_seed(0, "Heide11", "house", "random50"))
    other = quality.random_mask((31, 17), 0.5, quality.image_seed(0, "Heide11", "boat", "random50"))
    assert np.array_equal(holes, again)
    assert not np.array_equal(holes, other)


def test_noise_is_clipped_seeded_and_has_sigma(quality):
    clean = np.full((200, 200), 0.5)
    noisy = quality.add_gaussian_noise(clean, 25 / 255, quality.image_seed(0, "x"))
    assert noisy.dtype == np.float32
    assert np.std(noisy) == pytest.approx(25 / 255, rel=0.03)
    assert np.array_equal(noisy, quality.add_gaussian_noise(clean, 25 / 255, quality.image_seed(0, "x")))
    edge = quality.add_gaussian_noise(np.ones((50, 50)), 50 / 255, quality.image_seed(0, "y"))
    assert edge.max() == 1.0 and edge.min() >= 0.0


def test_crops_and_lr(quality):
    image = np.arange(10 * 13 * 3, dtype=np.uint8).reshape(10, 13, 3)
    assert quality.centre_crop(image, 6).shape == (6, 6, 3)
    assert quality.centre_crop(image, 12).shape == (10, 12, 3)
    assert quality.centre_crop(image, None) is image
    hr = quality.crop_to_multiple(image, 4)
    assert hr.shape == (8, 12, 3)
    assert np.array_equal(hr, image[1:9, 0:12])
    assert quality.make_lr(hr, 4).shape == (2, 3, 3)
    with pytest.raises(ValueError):
        quality.make_lr(image, 4)


def test_image_names(quality):
    assert quality._denoise_name("image_F16_512rgb") == "F16"
    assert quality._denoise_name("image_Baboon512rgb") == "Baboon"
    assert quality._denoise_name("kodim01") == "kodim01"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def tiny_data(tmp_path):
    """A data folder with the benchmark's layout and one or two small synthetic images per set."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:72, 0:72]
    smooth = (127 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0)).astype(np.uint8)
    colour = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], axis=-1)
    root = tmp_path / "data"
    _save(root / "denoise/CSet9/image_F16_512rgb.png", colour)
    _save(root / "denoise/CSet9/kodim01.png", colour[::-1])  # second image: --images 1 must skip it
    _save(root / "denoise/Set12/01.png", smooth)
    _save(root / "sr/Set5/baby_GT.png", colour)
    _save(root / "sr/Set14/baboon_GT.png", colour[:, ::-1])
    grey = smooth.copy()
    grey[30:36, 30:36] = 0  # genuinely black pixels: the published-mask protocol counts them as holes
    holes = rng.random(grey.shape) < 0.5
    _save(root / "inpaint/Heide11/house_GT.png", grey)
    _save(root / "inpaint/Heide11/house_masked.png", np.where(holes, 0, grey).astype(np.uint8))
    return root


def test_end_to_end_tiny_run(quality, tiny_data, tmp_path, capsys):
    out = tmp_path / "results.json"
    common = ["--data", str(tiny_data), "--iterations", "4", "--snapshot-every", "2", "--crop", "32",
              "--images", "1", "--preset", "fast", "--device", "cpu", "--threads", "1"]
    assert quality.main([*common, "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    document = json.loads(out.read_text())
    records = document["records"]
    groups = {(r["task"], r["set"], r["setting"]) for r in records}
    assert groups == {
        ("denoise", "CSet9", "sigma25"), ("denoise", "CSet9", "sigma50"),
        ("denoise", "Set12", "sigma25"), ("denoise", "Set12", "sigma50"),
        ("super-resolve", "Set5", "x4"), ("super-resolve", "Set14", "x4"),
        ("inpaint", "Heide11", "random50"), ("inpaint", "Heide11", "published-masks"),
    }
    assert len(records) == 8  # --images 1
    for record in records:
        methods = record["methods"]
        assert {"dip_final", "dip_oracle", "dip_last_output", "dip_auto"} <= set(methods)
        assert methods["dip_final"]["iteration"] == 4
        assert methods["dip_final"]["stop_reason"] == "budget"  # the budget fit runs with stopping off
        assert methods["dip_auto"]["stopped_at"] <= 4 and methods["dip_auto"]["stop_reason"]
        assert methods["dip_oracle"]["iteration"] in (2, 4)
        assert methods["dip_oracle"]["psnr"] >= methods["dip_final"]["psnr"]
        assert [p["iteration"] for p in record["dip"]["curve"]] == [2, 4]
        assert record["dip"]["settings"]["fit"]["iterations"] == 4
        if record["task"] == "denoise":
            assert record["shape"][:2] == [32, 32]
            assert {"input", "nlm", "tv"} <= set(methods)
            assert record["noisy_input"] == "uint8" and record["input_range_exact"]
            # Both baselines beat the noisy input on a smooth image.
            assert methods["nlm"]["psnr"] > methods["input"]["psnr"]
            assert methods["tv"]["psnr"] > methods["input"]["psnr"]
        elif record["task"] == "super-resolve":
            assert record["shape"] == [64, 64, 3]  # crop grown to 16 x factor for the engine
            assert record["lr_shape"] == [16, 16, 3]
            assert methods["bicubic"]["psnr"] > 20 and methods["lanczos"]["psnr"] > 20
        else:
            assert methods["biharmonic"]["psnr"] > methods["input"]["psnr"]
            if record["setting"] == "published-masks":
                assert record["ground_truth_zeros_in_holes"] == 36  # the black 6x6 square, inside the crop
            else:
                assert record["missing_fraction"] == 0.5

    summaries = {(s["task"], s["set"], s["setting"]): s for s in document["summaries"]}
    assert summaries[("super-resolve", "Set5", "x4")]["rows"]["bicubic"]["published"].startswith("28.43")
    assert "### denoise / CSet9 / sigma25" in printed
    if importlib.util.find_spec("bm3d") is None:
        assert "BM3D skipped" in printed
    assert "31.49" in printed  # the published per-image DIP number for Set5 baby

    # --report re-prints the tables of a saved run without running anything.
    assert quality.main(["--report", str(out)]) == 0
    reprinted = capsys.readouterr().out
    assert "| denoise | CSet9 | sigma25 | 1 | 32x32 |" in reprinted
    assert "### inpaint / Heide11 / published-masks" in reprinted
    # Several files (the GPU protocol keeps one per group of tasks): one set of tables of
    # all their images, and a file's line saying what made its records.
    saved = json.loads(out.read_text())
    parts = []
    for name, tasks in (("denoise.json", {"denoise"}), ("others.json", {"super-resolve", "inpaint"})):
        part = tmp_path / name
        part.write_text(json.dumps({**saved, "records": [r for r in saved["records"] if r["task"] in tasks]}))
        parts.append(str(part))
    assert quality.main(["--report", *parts]) == 0
    combined = capsys.readouterr().out
    assert combined[:combined.index(parts[0] + ":")] == reprinted[:reprinted.index(str(out) + ":")]
    denoised = sum(r["task"] == "denoise" for r in saved["records"])
    assert 0 < denoised < len(saved["records"])
    assert f"{parts[0]}: {denoised} image(s) from 1 run(s)" in combined
    assert f"{parts[1]}: {len(saved['records']) - denoised} image(s)" in combined
    with pytest.raises(SystemExit, match="in both"):  # the same image twice would count twice
        quality.main(["--report", parts[0], parts[0]])

    # The same run as CSV: one row per image and method.
    csv_out = tmp_path / "results.csv"
    assert quality.main([*common, "--tasks", "inpaint", "--masks", "random", "--auto-stop", "off",
                         "--out", str(csv_out)]) == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("task,set,setting,image,method,psnr")
    assert any(",dip_oracle," in line for line in lines)
    assert len(lines) == 1 + 5  # input, biharmonic, dip_final, dip_oracle, dip_last_output; no dip_auto
    assert not any(",dip_auto," in line for line in lines)


def test_time_to_result_runs_both_engines_side_by_side(tiny_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("napari_dip_ttr_benchmark", SCRIPT.parent / "time_to_result.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ttr.json"
    assert module.main(["--data", str(tiny_data), "--baseline", "HEAD", "--sizes", "32", "--tasks", "denoise",
                        "--colours", "grey", "--configs", "preset:fast", "--iterations", "3", "--threads", "1",
                        "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    (row,) = document["rows"]
    assert set(row["fits"]) == {"current preset:fast", "baseline preset:fast"}
    for fit in row["fits"].values():
        assert fit["iteration"] <= 3 and fit["seconds"] > 0 and fit["preset"] == "fast"
        assert 10 < fit["psnr"] < 60
    printed = capsys.readouterr().out
    assert "| denoise Set12/01 32² σ25 | preset:fast (fast) | current |" in printed
    # The baseline's worktree is removed afterwards.
    import subprocess

    worktrees = subprocess.run(["git", "-C", str(SCRIPT.parents[1]), "worktree", "list"], capture_output=True, text=True)
    assert document["baseline"] and "napari-dip-ttr-" not in worktrees.stdout


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"napari_dip_{name}_benchmark", SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_result_configs_take_modifiers_and_refuse_typos(tiny_data, tmp_path):
    module = _load_script("time_to_result")
    assert module.parse_config("default") == (None, {})
    assert module.parse_config("preset:paper+bf16+graphs") == ("paper", {"precision": "bfloat16", "cuda_graphs": True})
    assert module.parse_config("preset:paper+recorrupt") == ("paper", {"recorrupt": True})
    assert module.parse_config("default+lr0.005") == (None, {"learning_rate": 0.005})
    assert module.parse_config("preset:paper+b20.95") == ("paper", {"recorruption_adam_beta2": 0.95})
    for bad in ("default+lr", "default+lr-1", "default+lrx", "default+b21", "default+b2x"):
        with pytest.raises(SystemExit):
            module.parse_config(bad)
    for bad in ("default+bf61", "fast", "preset:fast+"):
        with pytest.raises(SystemExit):
            module.parse_config(bad)
    out = tmp_path / "ttr.json"
    assert module.main(["--data", str(tiny_data), "--sizes", "32", "--tasks", "denoise", "--colours", "grey",
                        "--configs", "preset:fast,preset:fast+bf16,preset:fast+norecorrupt,preset:fast+b20.9",
                        "--iterations", "2", "--threads", "1", "--out", str(out)]) == 0
    fits = json.loads(out.read_text())["rows"][0]["fits"]
    assert fits["current preset:fast"]["precision"] == "float32"
    assert fits["current preset:fast+bf16"]["precision"] == "bfloat16"
    # fast recorrupts by default; +norecorrupt fits the paper's way.
    assert fits["current preset:fast"]["recorrupt_sigma"] > 0
    assert fits["current preset:fast+norecorrupt"]["recorrupt_sigma"] is None
    # +b2X reaches the engine's recorrupted fit; without it the preset's own beta2.
    assert fits["current preset:fast+b20.9"]["adam_beta2"] == 0.9
    assert fits["current preset:fast"]["adam_beta2"] == 0.95
    # A fit that does not recorrupt cannot take the beta2 asked for: a failed fit in the
    # table (the script goes on with the next), not a silent 0.999.
    refused = tmp_path / "refused.json"
    module.main(["--data", str(tiny_data), "--sizes", "32", "--tasks", "denoise", "--colours", "grey",
                 "--configs", "preset:fast+norecorrupt+b20.9", "--iterations", "2", "--threads", "1",
                 "--out", str(refused)])
    fit = json.loads(refused.read_text())["rows"][0]["fits"]["current preset:fast+norecorrupt+b20.9"]
    assert "did not recorrupt" in fit["error"]


def test_time_to_result_super_resolves_at_the_factor_asked(tiny_data):
    module = _load_script("time_to_result")
    options = module.build_parser().parse_args(["--data", str(tiny_data), "--tasks", "super-resolve", "--factor", "8"])
    options.tasks, options.sizes = ["super-resolve"], [64]
    (case,) = module.cases(module._load_quality(), options)
    name, task, observed, *_ = case
    assert task == "super-resolve" and name.startswith("SR x8 Set5/baby 64²") and observed.shape[:2] == (8, 8)
    with pytest.raises(SystemExit):
        module.build_parser().parse_args(["--factor", "5"])


def test_time_to_result_picks_an_image_as_large_as_the_size_asked(tiny_data):
    module = _load_script("time_to_result")
    quality = module._load_quality()
    big = np.zeros((96, 96), np.uint8)
    _save(tiny_data / "denoise/Set12/02.png", big)
    assert module.first_at_least(quality, tiny_data, "Set12", 64)[0] == "01"
    assert module.first_at_least(quality, tiny_data, "Set12", 90)[0] == "02"
    assert module.first_at_least(quality, tiny_data, "Set12", 200)[0] == "01"  # none is: the first
    # --images N: the first N that are large enough.
    _save(tiny_data / "denoise/Set12/03.png", big)
    assert [name for name, _ in module.at_least(quality, tiny_data, "Set12", 90, 5)] == ["02", "03"]
    assert [name for name, _ in module.at_least(quality, tiny_data, "Set12", 64, 2)] == ["01", "02"]


def test_time_to_result_names_the_cpus_model_and_vector_instructions():
    # The same fit rounds differently on another machine: a table says which CPU ran it.
    module = _load_script("time_to_result")
    info = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
    assert module.cpu_kind(info) == "AMD EPYC, AVX2"
    assert module.cpu_kind(info.replace("avx2", "avx2 avx512f avx512bw")) == "AMD EPYC, AVX-512"
    assert module.cpu_kind("processor\t: 0\n") == ""


def test_a_fit_repeats_to_the_bit_in_fresh_processes(capsys):
    # What the README promises: the same seed and threads give the same result on one machine.
    module = _load_script("repeat_check")
    assert module.main(["--threads", "1", "--iterations", "4"]) == 0
    out = capsys.readouterr().out
    first, second = [line.split()[2] for line in out.splitlines() if line.startswith("1 threads:")]
    assert first == second and "repeated to the bit" in out and "(cpu " in out


def test_speed_engine_variants_map_to_fit_settings():
    module = _load_script("speed")
    sys.path.insert(0, str(SCRIPT.parents[1] / "src"))
    options = module.engine_options("engine-bf16-nostop-nobench")
    assert options["fit"]["precision"] == "bfloat16" and options["fit"]["stopping"].rule == "none"
    assert options["no_autotune"] and module.engine_options("engine") == {"fit": {}, "no_autotune": False}
    with pytest.raises(SystemExit):
        module.engine_options("engine-turbo")


def test_fmd_fits_only_what_auto_picks_or_no_dip_at_all(tmp_path):
    module = _load_script("fmd")
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:48, 0:48]
    clean = 40 + 150 * (np.sin(x / 6.0) * np.cos(y / 8.0)) ** 2
    for name in ("Confocal_X_1.png", "WideField_Y_1.png"):
        _save(tmp_path / "microscopy/FMD/gt" / name, clean.astype(np.uint8))
        noisy = rng.poisson(clean / 4.0) * 4.0 + rng.normal(0, 3, clean.shape)
        _save(tmp_path / "microscopy/FMD/raw" / name, np.clip(noisy, 0, 255).astype(np.uint8))
    common = ["--data", str(tmp_path), "--crop", "32", "--no-bm3d", "--iterations", "2", "--images", "0"]
    out = tmp_path / "default.json"
    assert module.main([*common, "--variants", "dip_default", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"].values()
    picked = result["methods"]["dip_default_auto"]["same_as"]
    fitted = {m[: -len("_auto")] for m in result["methods"] if m.endswith("_auto") and m != "dip_default_auto"}
    assert fitted == {picked}
    out = tmp_path / "nodip.json"
    assert module.main([*common, "--no-dip", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"].values()
    assert set(result["methods"]) == {"noisy"}


def test_step_variants_measures_a_step_and_says_whether_it_was_graphed():
    module = _load_script("step_variants")
    row = module.measure(32, channels_last=False, graphs=True, precision="float32", warmup=1, iterations=1, device="cpu")
    assert row["seconds_per_iteration"] > 0
    # Asked for graphs on a CPU: none were used, and the row says so rather than claiming them.
    assert row["cuda_graphs_setting"] is False and row["captures"] is None


@pytest.mark.parametrize("flag, key, without, with_", [("--slice-ops", "slice_ops", False, True),
                                                       ("--compile", "compiled", None, "default")])
def test_step_variants_compares_a_switch_on_request(flag, key, without, with_, tmp_path, monkeypatch):
    from napari_dip.engine import fit

    # A real compile is too slow for a test: an identity "compile" that still marks the
    # network as compiled, so the rows must come from the engine's own setting.
    monkeypatch.setattr(fit, "compile_network", lambda network, mode: network)
    module = _load_script("step_variants")
    out = tmp_path / "variants.json"
    assert module.main(["--device", "cpu", "--sizes", "32", "--warmup", "1", "--iterations", "1", flag,
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    # Each variant with and without the switch, in the plain layout only.
    assert len(rows) == 8 and not any(row["channels_last"] for row in rows)
    assert [row[key] for row in rows].count(without) == 4 and [row[key] for row in rows].count(with_) == 4
    assert all(row["first_seconds"] > 0 for row in rows)


def test_stopping_traces_run_the_whole_budget():
    """Traces are replayed offline for rules that stop later than the default, so the fit
    behind one must not stop at the default's trend test (it did, once that became the default)."""
    from argparse import Namespace

    stopping = _load_script("stopping")
    rng = np.random.default_rng(0)
    clean = np.clip(0.5 + 0.3 * np.sin(np.linspace(0, 6, 32))[:, None] * np.cos(np.linspace(0, 4, 32))[None], 0, 1)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    options = Namespace(preset="fast", channels=4, iterations=400, device="cpu", seed=0, learning_rate=0.05)
    scores, psnrs, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    assert len(scores) == len(psnrs) == 400


def test_stopping_traces_take_the_held_out_fraction():
    from argparse import Namespace

    stopping = _load_script("stopping")
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.1, (32, 32)), 0, 1).astype(np.float32)
    options = Namespace(preset="fast", channels=4, iterations=30, device="cpu", seed=0, learning_rate=0.05)
    default, _, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    options.holdout = 0.05
    same, _, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    options.holdout = 0.2
    more, _, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    assert np.array_equal(default, same) and not np.allclose(default, more)


def test_stopping_traces_take_network_changes_and_refuse_unknown_fields():
    from argparse import Namespace

    from napari_dip.engine.networks import FAST

    stopping = _load_script("stopping")
    net = stopping.network_overrides(FAST, ["channels_up=16:48:48:48:48", "kernel_up=1", "padding=zeros"])
    assert net.channels_up == (16, 48, 48, 48, 48) and net.kernel_up == 1 and net.padding == "zeros"
    assert net.channels_down == FAST.channels_down
    # A switch is a bool, not the truthy string "false".
    switched = stopping.network_overrides(FAST, ["merge_norm=false", "conv_bias=False"])
    assert switched.merge_norm is False and switched.conv_bias is False
    with pytest.raises(SystemExit, match="channel_up"):
        stopping.network_overrides(FAST, ["channel_up=16"])
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.1, (32, 32)), 0, 1).astype(np.float32)
    options = Namespace(preset="fast", channels=4, iterations=20, device="cpu", seed=0, learning_rate=0.05)
    plain, _, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    options.network = ["channels_up=2:4:4:4:4"]
    narrower, _, _ = stopping.trace("denoise", noisy, {}, lambda est: 0.0, "validation", options)
    assert len(narrower) == 20 and not np.allclose(plain, narrower)


def test_stopping_traces_take_a_learning_rate_schedule_the_image_as_input_and_a_jitter():
    """The variants measured in the twenty-first session: each must change the fit it names."""
    from argparse import Namespace

    import torch

    from napari_dip.arrays import prepare_image
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    stopping = _load_script("stopping")
    # The schedule sets the rate before every step: after step k it is the base times step k's factor.
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.01)
    stopping.schedule_learning_rate(optimizer, "linear:4:0.5")
    rates = []
    for _ in range(5):
        weight.sum().backward()
        optimizer.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.0])
    with pytest.raises(ValueError, match="cosine"):
        stopping.learning_rate_factor("step:10", 0)

    # The upsampled image fills the input's first channels; the other channels stay noise.
    rng = np.random.default_rng(0)
    low = rng.random((16, 16, 3)).astype(np.float32)
    chw, layout, _ = prepare_image(low)
    net, fit = settings_for("super-resolve", "fast", factor=4, channels=4, iterations=3, device="cpu")
    fitter = Fitter(chw, forward_model_for("super-resolve", layout, factor=4), net, fit)
    noise = fitter.input.clone()
    stopping.use_upsampled_input(fitter, chw)
    crop = (slice(None), slice(None), *fitter._crop)
    upsampled = torch.nn.functional.interpolate(torch.as_tensor(chw)[None], size=(64, 64), mode="bicubic")
    assert torch.allclose(fitter.input[:, :3][crop], upsampled.clamp(0, 1))
    assert torch.equal(fitter.input[:, 3:], noise[:, 3:])

    # Each option changes the super-resolution trace against the plain one.
    def mean(estimate):
        return float(np.mean(estimate, dtype=np.float64))

    options = Namespace(preset="fast", channels=4, iterations=6, device="cpu", seed=0, learning_rate=0.05)
    _, plain, _ = stopping.trace("super-resolve", low, {"factor": 4}, mean, "wmv", options)
    for name, value in (("lr_schedule", "cosine:6"), ("image_input", True), ("jitter", 0.0)):
        _, changed, _ = stopping.trace("super-resolve", low, {"factor": 4}, mean, "wmv",
                                       Namespace(**vars(options), **{name: value}))
        # The first step is the same with a schedule (its factor is 1); the later ones are not.
        assert len(changed) == 6 and not np.allclose(plain[2:], changed[2:]), name


def test_stopping_traces_freeze_the_encoder_or_separate_the_convolutions():
    """The twenty-second session's structural variants: a frozen encoder must keep its
    weights through a fit while the decoder's move; separable convolutions must replace
    every convolution wider than 1x1, and only while the network is built."""
    from argparse import Namespace

    import torch

    from napari_dip.engine import networks

    stopping = _load_script("stopping")
    net = networks.SkipNet(networks.FAST.with_width(4), 1)
    frozen = stopping.freeze_encoder(net)
    encoder = [w for s in (net.body, net.body.coarser) for b in (s.down, s.skip) for w in b.parameters()]
    assert frozen > 0 and encoder and not any(w.requires_grad for w in encoder)
    assert all(w.requires_grad for w in net.body.fuse.parameters()) and net.head.weight.requires_grad

    with stopping.separable_convolutions(True):
        separable = networks.SkipNet(networks.FAST.with_width(4), 1)
    # Outside the context the networks are built plain again.
    assert networks.SkipNet(networks.FAST.with_width(4), 1).body.down[0][0].groups == 1
    depthwise = [m for m in separable.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    wide = [m for m in separable.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert depthwise and wide == depthwise
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)

    rng = np.random.default_rng(0)
    low = rng.random((16, 16)).astype(np.float32)

    def mean(estimate):
        return float(np.mean(estimate, dtype=np.float64))

    options = Namespace(preset="fast", channels=4, iterations=5, device="cpu", seed=0, learning_rate=0.05)
    _, plain, _ = stopping.trace("super-resolve", low, {"factor": 4}, mean, "wmv", options)
    for name in ("freeze_encoder", "separable"):
        _, changed, _ = stopping.trace("super-resolve", low, {"factor": 4}, mean, "wmv",
                                       Namespace(**vars(options), **{name: True}))
        assert len(changed) == 5 and not np.allclose(plain[1:], changed[1:]), name


def test_stopping_fills_inpaintings_holes_for_the_image_input():
    import torch

    from napari_dip.arrays import prepare_image
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    stopping = _load_script("stopping")
    rng = np.random.default_rng(0)
    clean = np.linspace(0.2, 0.8, 32 * 32, dtype=np.float32).reshape(32, 32)
    holes = rng.random(clean.shape) < 0.5
    chw, layout, _ = prepare_image(np.where(holes, 0.0, clean).astype(np.float32))
    net, fit = settings_for("inpaint", "fast", channels=4, iterations=2, device="cpu")
    fitter = Fitter(chw, forward_model_for("inpaint", layout, mask=holes), net, fit)
    noise = fitter.input.clone()
    stopping.use_filled_input(fitter, chw, ~holes)
    crop = (slice(None), slice(None), *fitter._crop)
    first = fitter.input[:, :1][crop][0, 0].numpy()
    np.testing.assert_allclose(first[~holes], chw[0][~holes])  # known pixels as observed
    # holes take their neighbours' values (a ramp stays a ramp), not the zeros they hold
    assert np.abs(first[holes] - clean[holes]).max() < 0.1
    assert torch.equal(fitter.input[:, 1:], noise[:, 1:])


def test_stopping_starts_the_fit_at_a_classical_estimate():
    """``--output-start``: the first output is the estimate itself, jitter or not, and the
    fit then moves away from it (the correction is fitted, not frozen)."""
    from argparse import Namespace

    from skimage.restoration import inpaint_biharmonic

    stopping = _load_script("stopping")
    rng = np.random.default_rng(0)
    low = rng.random((16, 16)).astype(np.float32)
    up = stopping.first_estimate("super-resolve", low[None], {}, (64, 64), "bicubic")
    assert up.shape == (1, 64, 64) and abs(float(up.mean()) - float(low.mean())) < 0.02
    clean = np.linspace(0.2, 0.8, 32 * 32, dtype=np.float32).reshape(32, 32)
    holes = rng.random(clean.shape) < 0.5
    filled = stopping.first_estimate("inpaint", np.where(holes, 0, clean)[None], {"mask": holes}, (32, 32), "biharmonic")
    np.testing.assert_allclose(filled[0], inpaint_biharmonic(np.where(holes, 0, clean), holes), atol=1e-6)
    with pytest.raises(SystemExit, match="does not apply"):
        stopping.first_estimate("super-resolve", low[None], {}, (64, 64), "biharmonic")

    outputs = []
    options = Namespace(preset="fast", channels=4, iterations=4, device="cpu", seed=0, learning_rate=0.05,
                        output_start="bicubic")
    _, _, _ = stopping.trace("super-resolve", low, {"factor": 4}, lambda est: outputs.append(est.copy()) or 0.0,
                             "wmv", options)
    assert len(outputs) == 4
    np.testing.assert_allclose(outputs[0], up[0], atol=1e-6)  # the running average's first value is the first output
    assert not np.allclose(outputs[-1], up[0], atol=1e-4)
    # Without the output sigmoid the start would be off by a half: refused, not run.
    with pytest.raises(SystemExit, match="sigmoid"):
        stopping.trace("super-resolve", low, {"factor": 4}, lambda est: 0.0, "wmv",
                       Namespace(**vars(options), network=["output_sigmoid=false"]))


def test_drift_match_reports_drifting_frames_and_unrelated_planes(tiny_data, capsys):
    module = _load_script("drift_match")
    assert module.main(["--data", str(tiny_data), "--images", "01.png", "--frames", "3", "--crop", "32",
                        "--sizes", "32"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split()[-2:] for line in out.splitlines() if line.startswith("01.png")}
    assert set(rows) == {"SR", "inpainting", "sigma"}
    # The frames move one pixel a frame: 1 and 2 px, matched well without noise. (The x4
    # frames of this smooth 32 px picture are 8 px wide: too small to say, only reported.)
    drifts = [float(cell.split("/")[0]) for cell in rows["inpainting"]]
    assert drifts == pytest.approx([1, 2], abs=0.1) and all(float(c.split("/")[1]) > 0.5 for c in rows["inpainting"])
    assert len(rows["SR"]) == 2
    assert "camera / moon" in out and "32²" in out


def test_structure_step_cost_times_the_three_variants():
    from napari_dip.engine.networks import FAST

    module = _load_script("structure_step_cost")
    config = FAST.with_width(4)
    for variant in ("whole", "frozen encoder", "separable"):
        assert module.step_ms(config, variant, size=64, steps=2, warmup=1) > 0


def test_step_levers_narrow_and_shorten_the_network_and_refuse_typos():
    from napari_dip.engine.networks import FAST

    module = _load_script("step_levers")
    net = module.lever_config(FAST, "w32+s4+zeros")
    assert net.channels_down == net.channels_up == (32,) * 4 and net.channels_skip == (4,) * 4
    assert net.padding == "zeros"
    assert module.lever_config(FAST, "base") == FAST
    with pytest.raises(SystemExit, match="w<channels>"):
        module.lever_config(FAST, "w32+wide")
    # One field changed outright, after the width: the finest scale narrower than the rest.
    net = module.lever_config(FAST, "w32+channels_up=16:32:32:32:32+kernel_up=1")
    assert net.channels_up == (16, 32, 32, 32, 32) and net.channels_down == (32,) * 5 and net.kernel_up == 1


def test_adam_step_times_both_kinds_on_the_named_network_and_refuses_unknown_ones(tmp_path):
    module = _load_script("adam_step")
    assert module.main(["--networks", "recorruption:fast", "--threads", "1", "--steps", "2", "--rounds", "2",
                        "--out", str(tmp_path / "adam.json")]) == 0
    import json

    (row,) = json.loads((tmp_path / "adam.json").read_text())["rows"]
    assert row["network"] == "recorruption:fast" and row["threads"] == 1
    assert row["tensors"] > 10 and row["per-tensor ms"] > 0 and row["fused ms"] > 0
    assert len(row["blocks"]["fused"]) == len(row["blocks"]["per-tensor"]) == 2
    with pytest.raises(SystemExit, match="unknown network"):
        module.network("tiny")


def test_width_trace_variants_set_width_and_schedule_and_refuse_typos():
    module = _load_script("width_trace")
    assert module.parse_variant("w16+lr=0.02") == (16, {"learning_rate": 0.02})
    assert module.parse_variant("avg=0.98+jitter=0.05") == (32, {"average_weight": 0.98, "reg_noise_std": 0.05})
    for typo in ("w16+lr", "w16+rate=0.1", "wide", "w0", "lr=abc"):
        with pytest.raises(SystemExit, match="unknown variant part"):
            module.parse_variant(typo)
    with pytest.raises(SystemExit, match="twice"):
        module.parse_variant("w16+w32")
    # Each setting a variant names is an argument of iter_restore.
    import inspect

    from napari_dip.restore import iter_restore

    assert set(module.SETTINGS.values()) <= set(inspect.signature(iter_restore).parameters)


def test_recorruption_trace_variants_name_an_input_and_refuse_typos():
    module = _load_script("recorruption_trace")
    assert module.parse_variant("noise") == {"noise": ""}
    assert module.parse_variant("image+r2r=1.5+lr=0.02") == {"image": "", "r2r": "1.5", "lr": "0.02"}
    assert module.parse_variant("image+noise") == {"image": "", "noise": ""}
    for typo in ("image+r2r", "image+alpha=1", "noise+noise", "image+lr"):
        with pytest.raises(SystemExit, match="bad variant part"):
            module.parse_variant(typo)
    with pytest.raises(SystemExit, match="names no input"):
        module.parse_variant("lr=0.02")
    with pytest.raises(SystemExit, match="needs the image"):
        module.parse_variant("noise+r2r=1")


def test_replayed_smoothing_undoes_the_engines():
    """The held-out errors of a fit smoothed with 0.9, re-smoothed to 0 by the replay, are
    those of the same fit recorded unsmoothed (smoothing does not change the fit itself)."""
    from napari_dip.engine.fit import FitConfig, Fitter
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.stopping import StoppingConfig
    from tiny import TINY_NET

    stopping = _load_script("stopping")
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.1, (1, 32, 32)), 0, 1).astype(np.float32)
    recorded = {}
    for weight in (0.0, 0.9):
        rule = StoppingConfig(rule="validation", patience=10**6, warmup=0, smoothing=weight)
        fitter = Fitter(noisy, Identity(), TINY_NET, FitConfig(iterations=20, seed=0, device="cpu", threads=1,
                                                                      stopping=rule))
        recorded[weight] = np.array([float(fitter.stopper.last_score) for _ in fitter.run(snapshot_every=1)])
    assert not np.allclose(recorded[0.0], recorded[0.9])
    assert np.allclose(stopping.resmooth(recorded[0.9], 0.0), recorded[0.0], rtol=1e-5)
    assert np.allclose(stopping.resmooth(recorded[0.0], 0.9, recorded=0.0), recorded[0.9], rtol=1e-5)


def test_recorruption_validation_replays_the_trend_test_on_recorded_points():
    module = _load_script("recorruption_validation")
    # (iteration, psnr, score): the score falls to its best at 300, then creeps up.
    rows = [[200, 20.0, 1.0], [225, 21.0, 0.99], [300, 22.0, 0.95], [325, 22.1, 0.951], [350, 22.0, 0.9525],
            [375, 21.9, 0.9545], [400, 21.5, 0.97]]
    assert module.replay(rows, rise=0.002) == (350, 300, 22.0)  # 0.9525 > 0.95 * 1.002
    assert module.replay(rows, rise=0.005) == (400, 300, 22.0)
    assert module.replay(rows, rise=0.05) == (None, 300, 22.0)  # never fires: the best so far
    # Points before the warm-up never count as the best.
    assert module.replay([[100, 30.0, 0.1], *rows], rise=0.002) == (350, 300, 22.0)


def test_fmd_trace_records_the_score_of_a_recorrupted_photon_limited_fit(tmp_path):
    # Photon-limited fits are recorrupted by default, and a recorrupted fit hands the
    # stopper each step's target: the trace's hook must pass it on.
    import argparse

    from tiny import smooth_image

    rng = np.random.default_rng(0)
    clean = smooth_image(32) * 120 + 20
    folder = tmp_path / "microscopy" / "FMD"
    for kind, image in (("gt", clean), ("raw", rng.poisson(clean / 4.0) * 4.0)):
        (folder / kind).mkdir(parents=True)
        Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(folder / kind / "Cell_1.png")
    from napari_dip.restore import iter_restore

    raw = np.asarray(Image.open(folder / "raw" / "Cell_1.png"))
    (first,) = [s for s in iter_restore("denoise", raw, noise="poisson-gaussian", noise_fit="gat", iterations=1,
                                        snapshot_every=None)]
    assert first.settings["fit"]["recorrupt_sigma"] is not None  # so the trace below is of a recorrupted fit
    module = _load_script("fmd_trace")
    options = argparse.Namespace(image="Cell_1.png", data=tmp_path, crop=32, iterations=12, block="auto",
                                 noise="poisson-gaussian", out=tmp_path / "traces")
    saved = json.loads(module.trace(options).read_text())
    assert [iteration for iteration, _ in saved["scores"]] == list(range(1, 13))
    assert all(math.isfinite(score) for _, score in saved["scores"])
    assert [iteration for iteration, _ in saved["psnr"]] == [10]
    # The error in the transformed domain, the fit's own: the image's offset comes off first.
    assert [iteration for iteration, _ in saved["transformed_error"]] == [10]
    from napari_dip.noise import gat

    noise = {"a": [4.0], "b": [1.0], "offset": 2.0}
    assert module.transformed_error(clean, clean, noise) == 0
    expected = np.mean((gat(clean - 2.0, 4.0, 1.0) - gat(clean + 1.0, 4.0, 1.0)) ** 2)
    assert module.transformed_error(clean, clean + 3.0, noise) == pytest.approx(expected)


def test_a_protocol_cut_short_is_resumed_image_by_image(quality, tiny_data, tmp_path, monkeypatch, capsys):
    """The full protocol outlasts a GPU lease: the results are written after every image,
    and --resume fits only what is missing, refusing a file made with other settings."""
    out = tmp_path / "protocol.json"
    common = ["--data", str(tiny_data), "--tasks", "denoise", "--sets", "CSet9,Set12", "--sigmas", "25",
              "--iterations", "2", "--snapshot-every", "2", "--crop", "32", "--preset", "fast", "--device", "cpu",
              "--threads", "1", "--auto-stop", "off", "--out", str(out)]
    fits = []
    real_run_dip = quality.run_dip

    def cut_after_two(task, observed, *args, **kwargs):
        if len(fits) == 2:
            raise KeyboardInterrupt  # the lease's end, in the third image
        fits.append(task)
        return real_run_dip(task, observed, *args, **kwargs)

    monkeypatch.setattr(quality, "run_dip", cut_after_two)
    with pytest.raises(KeyboardInterrupt):
        quality.main(common)
    cut = json.loads(out.read_text())
    assert [r["image"] for r in cut["records"]] == ["F16", "kodim01"] and cut["meta"]["complete"] is False
    assert cut["records"][0]["made_by"]["machine"].endswith("CPU, %d cores" % os.cpu_count())

    fits.clear()
    monkeypatch.setattr(quality, "run_dip", lambda *a, **k: (fits.append(a[0]), real_run_dip(*a, **k))[1])
    assert quality.main([*common, "--resume"]) == 0
    assert len(fits) == 1  # only Set12/01 was left
    whole = json.loads(out.read_text())
    assert [r["image"] for r in whole["records"]] == ["F16", "kodim01", "01"] and whole["meta"]["complete"]
    assert whole["records"][:2] == cut["records"]  # kept as they were
    assert len(whole["meta"]["earlier_runs"]) == 1
    assert "2 image(s) kept from earlier runs" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="other iterations"):
        quality.main([*common[:-2], "--iterations", "3", "--out", str(out), "--resume"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("protocol")] == ["protocol.json"]  # no partial file
    # Fits of another kind of device draw other noise from the same seed: not mixed in.
    whole["records"][0]["made_by"]["device"] = "cuda"
    out.write_text(json.dumps(whole))
    with pytest.raises(SystemExit, match="made on cuda"):
        quality.main([*common, "--resume"])
    with pytest.raises(SystemExit):  # a CSV keeps nothing to compare a resumed run with
        quality.main([*common[:-2], "--out", str(tmp_path / "protocol.csv"), "--resume"])


def test_fit_breakdown_splits_each_fit_and_can_leave_cudnn_autotuning_off(tiny_data, tmp_path):
    module = _load_script("fit_breakdown")
    assert module.run_settings("paper+recorrupt+noautotune") == ({"preset": "paper", "recorrupt": True}, False)
    assert module.run_settings("fast+nographs") == ({"preset": "fast", "cuda_graphs": False}, True)
    assert module.run_settings("auto+bf16") == ({"preset": "auto", "precision": "bfloat16"}, True)
    with pytest.raises(SystemExit):
        module.run_settings("fast+graphz")

    import torch

    from napari_dip.engine import fit as fit_module

    original, before = fit_module.autotune_convolutions, torch.backends.cudnn.benchmark
    with module.autotuning(False):
        # What the fit calls on a CUDA device now changes nothing and says so.
        assert fit_module.autotune_convolutions(torch.device("cuda")) is None
        assert torch.backends.cudnn.benchmark is False
    assert fit_module.autotune_convolutions is original and torch.backends.cudnn.benchmark == before

    out = tmp_path / "breakdown.json"
    assert module.main(["--data", str(tiny_data), "--size", "32", "--device", "cpu", "--iterations", "6", "--every", "2",
                        "--runs", "fast,fast+noautotune+bf16", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["run"] for row in rows] == ["fast", "fast+noautotune+bf16"]
    assert [row["precision"] for row in rows] == ["float32", "bfloat16"]
    for row in rows:
        assert row["first_iteration"] == 2 and row["iteration"] == 6
        assert 0 < row["first_seconds"] <= row["seconds"] and row["ms_per_step"] > 0
        assert row["recorrupt_sigma"] > 0 and 10 < row["psnr"] < 60


def test_averaged_score_replays_the_rule_on_both_scores(tiny_data, tmp_path, capsys):
    module = _load_script("averaged_score")
    # The rule as the engine runs it: the best after the warm-up, a stop on a 0.2 % rise.
    rows = [(i, 1.0 - i / 1000) for i in range(1, 301)] + [(i, 0.7 + (i - 300) / 100) for i in range(301, 400)]
    assert module.replay(rows) == (300, 325)
    assert module.replay(rows[:250]) == (250, 250)  # never stopped: the end of the trace

    out = tmp_path / "averaged.json"
    assert module.main(["--data", str(tiny_data), "--set12", "0", "--sigmas", "25", "--crop", "32",
                        "--iterations", "30", "--threads", "1", "--out", str(out)]) == 0
    (case,) = json.loads(out.read_text())["cases"].values()
    single, averaged = dict(case["single"]), dict(case["averaged"])
    assert sorted(single) == list(range(1, 31)) and case["recorrupt_sigma"] > 0
    # The first step has no spread; later the averaged score is the single one less a spread.
    assert averaged[1] == pytest.approx(single[1])
    assert all(averaged[i] <= single[i] + 1e-9 for i in single) and averaged[30] < single[30]
    # The control-variate score: one per step, finite, and not the engine's score.
    control = dict(case["control"])
    assert sorted(control) == sorted(single) and all(math.isfinite(v) for v in control.values())
    assert control[30] != single[30]
    assert "| Set12/01 32² σ25 |" in capsys.readouterr().out


def test_noise_choice_reports_the_decision_and_its_evidence(tmp_path, monkeypatch, capsys):
    module = _load_script("noise_choice")
    rng = np.random.default_rng(0)
    signal = np.tile(np.linspace(20, 220, 128), (128, 1))
    photons = np.clip(np.round(4.0 * rng.poisson(signal / 4.0)), 0, 255).astype(np.uint8)
    flat = np.clip(np.round(signal + rng.normal(0, 10, signal.shape)), 0, 255).astype(np.uint8)
    row = module.evidence(photons)
    assert row["choice"] == "poisson-gaussian" and row["slope_in_standard_errors"] > 4 and row["bright_to_dark"] > 1.5
    assert module.evidence(flat)["choice"] == "gaussian"
    # The table marks a decision that differs from a known answer.
    monkeypatch.setattr(module, "build_cases", lambda data, seed=0: {
        "photons": ("poisson-gaussian", photons), "flat, said to be photons": ("poisson-gaussian", flat)})
    out = tmp_path / "choice.json"
    assert module.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| photons | poisson-gaussian | poisson-gaussian |" in printed
    assert "| flat, said to be photons | poisson-gaussian | gaussian **(wrong)** |" in printed
    assert "1 of 2 cases with a known answer decided wrongly" in printed
    assert json.loads(out.read_text())["cases"]["photons"]["choice"] == "poisson-gaussian"
    # Another bin rule is tried for the run only: the estimator's own is put back.
    from napari_dip import noise

    before = noise.MAX_CLIPPED_FRACTION
    assert module.main(["--max-clipped", "0.5"]) == 0
    assert "at most 50 % of a bin's blocks" in capsys.readouterr().out
    assert noise.MAX_CLIPPED_FRACTION == before


def test_first_picture_times_the_api_and_the_command_in_fresh_processes(tmp_path):
    module = _load_script("first_picture")
    out = tmp_path / "first.json"
    assert module.main(["--sizes", "32", "--colours", "grey", "--interval", "0.3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    api = [row for row in rows if row["mode"] == "api"]
    assert [row["run"] for row in api] == [1, 2]
    for row in api:  # by time: the interval has passed since the call, set-up included
        assert 0.3 <= row["call_to_picture"] < 60
        assert row["fit_seconds"] < row["call_to_picture"] < row["process_to_picture"]
    assert api[0]["process_to_picture"] < api[1]["process_to_picture"]  # the second call comes after the first
    [cli] = [row for row in rows if row["mode"] == "cli"]
    assert 0 < cli["process_to_first_count"] < 120
    assert all(row["commit"] for row in rows)
    recorded = json.loads(out.read_text())
    assert recorded["command"].endswith("--interval 0.3 --out " + str(out)) and recorded["torch"]


def test_first_picture_records_a_failing_mode_and_goes_on(tmp_path, monkeypatch):
    module = _load_script("first_picture")

    def no_command(image, src, out):
        raise RuntimeError("the command ended before counting an iteration")

    monkeypatch.setattr(module, "cli_first_count", no_command)
    out = tmp_path / "first.json"
    assert module.main(["--sizes", "32", "--colours", "grey", "--interval", "0.3", "--out", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert [(row["mode"], "error" in row) for row in rows] == [("api", False), ("api", False), ("cli", True)]


def test_first_picture_api_warm_starts_the_device_and_waits_before_the_call(tmp_path):
    module = _load_script("first_picture")
    out = tmp_path / "first.json"
    assert module.main(["--sizes", "32", "--colours", "grey", "--modes", "api-warm", "--interval", "0.3",
                        "--think", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["mode"], row["run"]) for row in rows] == [("api-warm", 1), ("api-warm", 2)]
    # The think time lies between the process's start and the call, not in the call.
    first = rows[0]
    assert first["process_to_picture"] - first["call_to_picture"] >= 3 and first["call_to_picture"] < 60
    # The warm-up ran, without failing (on this CPU it takes about a second).
    assert first["warm_up"]["failure"] is None and first["warm_up"]["resolve_seconds"] >= 0
    assert first["warm_up"]["finished_before_call"] is True


@pytest.mark.gui
def test_first_picture_times_the_widget_from_run(tmp_path):
    pytest.importorskip("napari")
    module = _load_script("first_picture")
    out = tmp_path / "first.json"
    assert module.main(["--sizes", "32", "--colours", "grey", "--modes", "widget", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["mode"], row["run"]) for row in rows] == [("widget", 1), ("widget", 2)]
    assert all(0 < row["run_to_picture"] < 60 for row in rows)


def test_step_profile_lists_the_operations_of_a_step(tmp_path):
    module = _load_script("step_profile")
    out = tmp_path / "profile.json"
    assert module.main(["--device", "cpu", "--size", "64", "--preset", "fast", "--warmup", "1", "--steps", "2",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [row["name"] for row in result["operations"]]
    assert "aten::convolution_backward" in names and any("batch_norm" in name for name in names)
    times = [row["self_ms_per_step"] for row in result["operations"]]
    assert times == sorted(times, reverse=True) and times[0] > 0
    assert result["ms_per_step_unprofiled"] > 0 and result["size"] == 64
    # The fast network's first convolution alone: 64² outputs, 48 channels, 32 inputs, 3x3, stride 2 (32²).
    assert result["convolution_gflop_forward"] > 2 * 32 * 32 * 48 * 32 * 9 / 1e9
    # --summarise adds up a profile's operations by kind, every millisecond counted once.
    totals = module.summarise(result["operations"])
    assert totals["convolution"] > 0 and totals["batch normalisation"] > 0
    assert sum(totals.values()) == pytest.approx(result["profiled_total_ms_per_step"])
    kernels = [{"name": "void cudnn::bn_bw_1C11_kernel_new<float>", "self_ms_per_step": 2.0},
               {"name": "sm90_xmma_wgrad_implicit_gemm", "self_ms_per_step": 1.0},
               {"name": "reduce_wgrad_nchw_helper", "self_ms_per_step": 0.5},
               {"name": "reflection_pad2d_backward_out_kernel", "self_ms_per_step": 0.25},
               {"name": "Memset (Device)", "self_ms_per_step": 0.125}]
    totals = module.summarise(kernels)
    assert (totals["batch normalisation"], totals["convolution"], totals["reflection padding"], totals["other"]) == (
        2.0, 1.5, 0.25, 0.125)
    assert module.main(["--summarise", str(out)]) == 0


def test_recorruption_network_trace_variants_and_the_residual_start():
    """``r1`` starts the fit at its input (the correction is zero), ``r2`` does not."""
    import torch

    module = _load_script("recorruption_network_trace")
    variant = module.parse_variant("w16d3r1lr0.003")
    assert (variant["w"], variant["d"], variant["r"], variant["lr"]) == (16, 3, 1, 0.003)
    with pytest.raises(SystemExit, match="bad variant"):
        module.parse_variant("w16q3")
    torch.manual_seed(0)
    image = torch.rand(1, 1, 32, 32)
    assert torch.equal(module.build_network(variant, 1)(image), image)
    moved = module.build_network(module.parse_variant("w16d3r2"), 1)(image)
    assert moved.shape == image.shape and not torch.allclose(moved, image)
    plain = module.build_network(module.parse_variant("w16d3"), 1)(image)
    assert plain.min() > 0 and plain.max() < 1  # the sigmoid's range: not a correction of the input


def test_two_cores_cuts_the_image_into_overlapping_halves_and_times_each_way(tmp_path):
    import torch

    module = _load_script("two_cores")
    image = torch.arange(40.0).reshape(1, 1, 1, 40)
    left, right = module._halves(image, 4)
    # Each half reaches 4 columns past the middle, so together they cover every column.
    assert left[..., :20].equal(image[..., :20]) and right[..., 4:].equal(image[..., 20:])
    assert left.shape[-1] == right.shape[-1] == 24
    out = tmp_path / "two-cores.json"
    assert module.main(["--sizes", "32", "--ways", "eager1,threads", "--halo", "4", "--steps", "2",
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["way"] for row in rows] == ["eager1", "threads"] and all(row["ms_per_step"] > 0 for row in rows)
    with pytest.raises(SystemExit):
        module.main(["--ways", "eager1,eager3"])



def test_readme_example_times_the_readmes_own_python_block():
    import ast

    module = _load_script("readme_example")
    block = module.first_python_block(module.README.read_text())
    assert block.startswith("import numpy as np") and "clean = denoise(noisy)" in block
    ast.parse(block)  # the block the README shows is valid Python
    with pytest.raises(SystemExit, match="no python block"):
        module.first_python_block("text\n## Python\nno code here\n")


def test_stop_estimate_records_the_rule_at_every_check_and_replays_the_estimates():
    estimate = _load_script("stop_estimate")
    rng = np.random.default_rng(0)
    clean = np.clip(0.5 + 0.3 * np.sin(np.linspace(0, 6, 32))[:, None] * np.cos(np.linspace(0, 4, 32))[None], 0, 1)
    noisy8 = np.round(np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1) * 255).astype(np.uint8)
    trace = estimate.record_fit(noisy8, iterations=300, channels=4)
    trace["case"] = "tiny"
    checks = trace["checks"]
    every = trace["check_every"]
    # A rule is asked at every check but the one where the budget ran out.
    last = trace["stopped_at"] - (every if trace["stop_reason"] == "budget" else 0)
    assert [c["iteration"] for c in checks] == list(range(every, last + 1, every))
    # The held-out error from the first check (warm-up included); the best only after the warm-up.
    assert all(c["current"] is not None for c in checks)
    assert all(c["score"] is None for c in checks if c["iteration"] < trace["stopping"]["warmup"])
    assert trace["score_noise"] > 0 and trace["shape"] == [32, 32]
    for name in estimate.ESTIMATORS:
        result = estimate.replay(trace, estimate.ESTIMATORS[name])
        assert result["checks"] == len(checks) and set(result["errors"]) == {0.25, 0.5, 0.75}
    # The engine's estimate is never before best + patience, which is never before now.
    for index in range(len(checks)):
        so_far = checks[: index + 1]
        assert estimate._engine_estimate(so_far, trace) >= estimate._patience(so_far, trace) >= so_far[-1]["iteration"]


def test_schedule_replay_cuts_a_trace_at_the_budget_and_keeps_the_rules_stop():
    replay = _load_script("schedule_replay").replay
    # The window variance falls to iteration 600, then rises; PSNR peaks at 500.
    iterations = np.arange(1, 2001)
    scores = (iterations - 600.0) ** 2
    psnrs = 30.0 - ((iterations - 500.0) / 300.0) ** 2
    # Cut before the rule fires: the average from the best iteration so far, at the budget.
    assert replay(scores, psnrs, 400, patience=1000, warmup=200) == (pytest.approx(psnrs[399]), 400, 400)
    # A patience that runs out before the budget stops the fit there, with the best's result.
    assert replay(scores, psnrs, 2000, patience=300, warmup=200) == (pytest.approx(psnrs[599]), 600, 900)
    # Nothing is rated during the warm-up: a score rising from the start is best at its end.
    value, best, stop = replay(iterations.astype(float), psnrs, 1500, patience=1000, warmup=200)
    assert (best, stop) == (200, 1200) and value == pytest.approx(psnrs[199])


def test_stopping_traces_take_adams_beta2(monkeypatch):
    from argparse import Namespace

    stopping = _load_script("stopping")
    import napari_dip.engine.fit as fit

    seen = []
    original = fit.Fitter.__init__

    def record(self, observation, forward_model, network_config, config, *args, **kwargs):
        seen.append(config.adam_beta2)
        original(self, observation, forward_model, network_config, config, *args, **kwargs)

    monkeypatch.setattr(fit.Fitter, "__init__", record)
    noisy = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    holes = np.zeros((32, 32), bool)
    holes[::3] = True
    for beta2 in (None, 0.9):
        options = Namespace(preset="paper", channels=4, iterations=3, device="cpu", seed=0, learning_rate=None,
                            adam_beta2=beta2)
        stopping.trace("inpaint", noisy, {"mask": holes}, lambda est: 0.0, "wmv", options)
    assert seen == [0.999, 0.9]


def test_output_average_forgets_the_first_output_sooner_than_the_engine_and_records_every_step():
    module = _load_script("output_average")
    # A first output far from the rest, as a random network's is.
    outputs = [np.zeros(4)] + [np.ones(4)] * 29
    found = dict(module.averages(outputs))
    assert all(np.allclose(a, 0) for a in found[1].values())
    uncorrected, debiased, window = found[30]["uncorrected"], found[30]["debiased"], found[30]["window8"]
    assert np.allclose(uncorrected, 1 - 0.99**29)  # the uncorrected average still holds 75 % of the first output
    first_weight = 0.01 * 0.99**29 / (1 - 0.99**30)
    assert np.allclose(debiased, 1 - first_weight) and debiased[0] > 0.96
    assert np.allclose(window, 1) and np.array_equal(found[30]["raw"], np.ones(4))
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.1, (32, 32)), 0, 1).astype(np.float32)
    recorded, layout, _ = module.record("denoise", noisy, {}, 6, 0, 0.1)
    assert len(recorded) == 6 and recorded[0].shape == (1, 32, 32) and not np.array_equal(recorded[0], recorded[-1])


def test_stacks_super_resolve_a_drifting_stack_only_when_asked(tiny_data, tmp_path):
    module = _load_script("stacks")
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:96, 0:96]
    cells = (40 + 150 * (0.5 + 0.5 * np.sin(x / 5.0) * np.sin(y / 6.0))).astype(np.uint8)
    _save(tiny_data / "microscopy/FMD/gt/cells.png", cells)
    _save(tiny_data / "microscopy/FMD/raw/cells.png",
          np.clip(cells + rng.normal(0, 6, cells.shape), 0, 255).astype(np.uint8))
    common = ["--data", str(tiny_data), "--fmd-image", "cells.png", "--set12-image", "01.png", "--frames", "2",
              "--crop", "64"]
    default = module.build_stacks(module.build_parser().parse_args(common))
    assert sorted(name.split()[0] for name in default) == ["FMD", "Set12"]  # no SR unless named

    with pytest.raises(SystemExit):  # a warm plane needs a step; 0 must not fall back to the default
        module.build_parser().parse_args([*common, "--warm-iterations", "0"])
    stacks = module.build_stacks(module.build_parser().parse_args([*common, "--stacks", "SR"]))
    high, low, task = stacks["SR 01.png (x4)"]
    assert task == "super-resolve" and high.shape == (2, 64, 64) and low.shape == (2, 16, 16)
    assert low.dtype == np.uint8
    # Each frame one pixel further right and down at high resolution.
    np.testing.assert_array_equal(high[1][:-1, :-1], high[0][1:, 1:])
    # Or there and back in turn.
    there_and_back = module.drifting_frames(high[0], 4, 32, back_and_forth=True)
    onwards = module.drifting_frames(high[0], 4, 32)
    for k, frame in enumerate(there_and_back):
        np.testing.assert_array_equal(frame, onwards[k % 2])
    # Sideways by half a pixel: rows stay put, every second frame is a whole pixel further
    # (a plain crop), and the frames between lie between their neighbours.
    picture = high[0].astype(np.float64)
    half = module.drifting_frames(picture, 5, 32, drift=(0.0, 0.5))
    np.testing.assert_array_equal(half[2][:, :-1], half[0][:, 1:])
    np.testing.assert_array_equal(half[4][:, :-2], half[0][:, 2:])
    assert not np.array_equal(half[1], half[0]) and not np.array_equal(half[1], half[2])
    between = 0.5 * (half[0] + half[2])
    assert np.abs(half[1] - between).mean() < 0.25 * np.abs(half[2] - half[0]).mean()
    # Backwards (up and left) moves the other way and stays inside the picture: a picture
    # just large enough holds the frames, the first one at its bottom-right corner.
    back = module.drifting_frames(picture, 3, 32, drift=(-1.0, -1.0))
    np.testing.assert_array_equal(back[1][1:, 1:], back[0][:-1, :-1])
    snug = picture[:35, :35]
    tight = module.drifting_frames(snug, 3, 32, drift=(-1.0, -1.0))
    np.testing.assert_array_equal(tight[0], snug[3:, 3:])
    np.testing.assert_array_equal(tight[-1], snug[1:33, 1:33])
    with pytest.raises(ValueError, match="do not fit"):
        module.drifting_frames(snug, 8, 32, drift=(-1.0, -1.0))
    sideways = module.build_stacks(module.build_parser().parse_args([*common, "--drift", "0,0.5", "--frames", "3"]))
    clean_frames = sideways["Set12 01.png (sigma 25)"][0]
    np.testing.assert_allclose(clean_frames[2][:, :-1], clean_frames[0][:, 1:])
    with pytest.raises(SystemExit):
        module.build_parser().parse_args([*common, "--drift", "0.5"])

    out = tmp_path / "sr-stack.json"
    assert module.main([*common, "--stacks", "SR", "--iterations", "4", "--threads", "1", "--out", str(out)]) == 0
    (rows_by_fit,) = json.loads(out.read_text())["results"].values()
    assert sorted(rows_by_fit) == ["independent", "warm start"]
    for rows in rows_by_fit.values():
        assert [row["frame"] for row in rows] == [0, 1]
        expected = [module.psnr(high[k], np.kron(low[k], np.ones((4, 4)))) for k in (0, 1)]
        assert [row["noisy_psnr"] for row in rows] == pytest.approx(expected)
        assert all(np.isfinite(row["psnr"]) and row["iterations"] == 4 for row in rows)


def test_stacks_warm_start_from_the_first_frame_only_when_asked(tiny_data, monkeypatch):
    import torch

    from napari_dip.engine import presets
    from napari_dip.engine.fit import Fitter

    module = _load_script("stacks")
    monkeypatch.setattr(presets, "WARM_START_ITERATIONS", 3)
    rng = np.random.default_rng(2)
    stack = np.clip(128 + 40 * rng.standard_normal((3, 32, 32)), 0, 255).astype(np.uint8)
    options = module.build_parser().parse_args(["--data", str(tiny_data), "--iterations", "4", "--threads", "1"])
    export = Fitter.export_state
    previous = module.restore(stack, True, options)
    options.warm_from = "first"
    first = module.restore(stack, True, options)
    assert Fitter.export_state is export  # the variant is undone after its run
    # Frames 0 and 1 fit the same way either way (frame 1 starts from frame 0 in both);
    # frame 2 starts from frame 0's network instead of frame 1's.
    for k in (0, 1):
        np.testing.assert_array_equal(first[k]["result"], previous[k]["result"])
    assert not np.array_equal(first[2]["result"], previous[2]["result"])

    # The diagnostic roll: the input a warm plane inherits is the fitted plane's, rolled.
    from napari_dip.engine.forward import Identity

    fitter = Fitter(stack[0][None].astype(np.float32) / 255, Identity(), presets.network_for("denoise", "fast"),
                    presets.settings_for("denoise", "fast", iterations=2, device="cpu")[1])
    with module.warm_input_rolled("-1,2"):
        rolled = fitter.export_state().input
    assert Fitter.export_state is export
    assert torch.equal(rolled, torch.roll(fitter.input, shifts=(-1, 2), dims=(-2, -1)))
    with pytest.raises(SystemExit):  # one variant at a time
        module.main(["--data", str(tiny_data), "--warm-from", "first", "--warm-roll-input=-1,-1"])


def test_stacks_record_drift_and_restarts_and_take_the_drift_limit(tiny_data, monkeypatch):
    from skimage import data

    from napari_dip.engine import presets

    module = _load_script("stacks")
    monkeypatch.setattr(presets, "WARM_START_ITERATIONS", 3)
    monkeypatch.setattr(presets, "WARM_START_MAX_DRIFT", presets.WARM_START_MAX_DRIFT)  # put back afterwards
    camera = data.camera()
    stack = np.stack([camera[200 + k : 232 + k, 200 + k : 232 + k] for k in (0, 1, 2)])  # x2: 0, 2, 4 px
    options = module.build_parser().parse_args(["--data", str(tiny_data), "--iterations", "2", "--threads", "1",
                                                "--factor", "2", "--channels", "8"])
    rows = module.restore(stack, True, options, "super-resolve")
    assert [r["restarted"] for r in rows] == [False, False, True]
    assert rows[0]["drift"] is None and rows[2]["drift"] > 3
    # --warm-max-drift sets the engine's limit before the fits: inf never restarts.
    monkeypatch.setattr(module, "build_stacks", lambda options: {})
    assert module.main(["--data", str(tiny_data), "--warm-max-drift", "inf"]) == 0
    assert presets.WARM_START_MAX_DRIFT == float("inf")
    assert [r["restarted"] for r in module.restore(stack, True, options, "super-resolve")] == [False] * 3
    # --warm-lr-factor sets the warm planes' rate before the fits (0.1: as before 2026-11-28).
    monkeypatch.setattr(presets, "WARM_START_LR_FACTOR", presets.WARM_START_LR_FACTOR)
    assert module.main(["--data", str(tiny_data), "--warm-lr-factor", "0.1"]) == 0
    assert presets.WARM_START_LR_FACTOR == 0.1
    # An inpainted stack takes its mask, one per frame, and the rule too (here: never restarts).
    holes = np.random.default_rng(0).random(stack.shape) < 0.5
    rows = module.restore(np.where(holes, 0, stack), True, options, "inpaint", {"mask": holes})
    assert len(rows) == 3 and rows[0]["result"].shape == stack.shape[1:]
    assert [r["restarted"] for r in rows] == [False] * 3 and rows[2]["drift"] == pytest.approx(2, abs=0.5)


def test_sr_iteration_cost_sets_the_engines_iteration_beside_the_bare_step(tmp_path):
    folder = tmp_path / "sr" / "Set5"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((72, 72, 3)) * 255).astype(np.uint8)).save(folder / "baby_GT.png")
    module = _load_script("sr_iteration_cost")
    out = tmp_path / "cost.json"
    assert module.main(["--data", str(tmp_path), "--crop", "64", "--iterations", "4", "--every", "2",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["crop"] == 64 and result["factor"] == 4
    assert result["engine_ms_per_iteration"] > 0 and result["bare_ms_per_step"] > 0


def test_step_levers_time_the_other_tasks_networks_on_their_own_fits():
    from napari_dip.engine.forward import KnownPixels, LanczosDownsampler
    from napari_dip.engine.networks import FAST, FAST_INPAINT

    module = _load_script("step_levers")
    cheap = module.lever_config(FAST_INPAINT, "zeros+nomerge+nobias")
    fitter = module.make_fitter(cheap, 32, 1, 2, task="inpaint")
    assert isinstance(fitter.forward_model, KnownPixels) and fitter.network_config == cheap
    assert fitter.image_size == (32, 32) and fitter.network_config.channels_skip == (0,) * 5
    fitter = module.make_fitter(FAST, 64, 1, 2, task="super-resolve")
    assert isinstance(fitter.forward_model, LanczosDownsampler) and fitter.image_size == (64, 64)
    with pytest.raises(SystemExit, match="denoising"):
        module.main(["--task", "inpaint", "--quality"])


