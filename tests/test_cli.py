"""The command line end to end, on tiny images (a few iterations of a narrow network)."""

import sys
import tempfile
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from napari_dip import io
from napari_dip.cli import bar_total, format_duration, format_rate, main, progress_postfix
from napari_dip.io import ImageFile, read_image, read_provenance, write_image
from tiny import diverging_at, smooth_image

FAST = ["--preset", "fast", "--channels", "8", "--iterations", "4", "--device", "cpu", "-q"]


@pytest.fixture
def grey_png(tmp_path):
    path = tmp_path / "grey.png"
    iio.imwrite(path, (smooth_image(32) * 255).astype(np.uint8))
    return path


@pytest.fixture
def stack_tif(tmp_path):
    path = tmp_path / "cells.tif"
    data = (smooth_image(32, channels=2) * 4000 + 100).astype(np.uint16)
    tifffile.imwrite(path, np.moveaxis(data, -1, 0), resolution=(5.0, 5.0), resolutionunit="CENTIMETER")
    return path


def test_denoise_png_end_to_end_records_provenance(grey_png, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["denoise", str(grey_png), "-o", str(out), *FAST]) == 0
    result = iio.imread(out)
    assert result.shape == (32, 32) and result.dtype == np.uint8
    provenance = read_provenance(out)
    assert provenance["task"] == "denoise" and provenance["iterations_run"] == 4
    assert provenance["stop_reason"] == "budget" and provenance["fit"]["seed"] == 0
    assert "wrote" in capsys.readouterr().out


def test_without_channels_the_preset_width_is_used_and_recorded(grey_png, tmp_path):
    # fast denoises by recorruption with 16 channels in 3 scales, the paper's way with 32 in
    # 5, and the other tasks keep 48 (BENCHMARKS.md).
    out = tmp_path / "out.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--preset", "fast", "--iterations", "2",
                 "--device", "cpu", "-q"]) == 0
    assert read_provenance(out)["network"]["channels_down"] == [16] * 3
    assert read_provenance(out)["fit"]["recorrupt_sigma"] > 0
    out = tmp_path / "paper-way.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--preset", "fast", "--iterations", "2",
                 "--no-recorrupt", "--device", "cpu", "-q"]) == 0
    assert read_provenance(out)["network"]["channels_down"] == [32] * 5
    out = tmp_path / "big.png"
    assert main(["super-resolve", str(grey_png), "-o", str(out), "--factor", "2", "--preset", "fast",
                 "--iterations", "1", "--device", "cpu", "-q"]) == 0
    assert read_provenance(out)["network"]["channels_down"] == [48] * 5


def test_auto_on_a_cuda_machine_recorrupts_the_paper_network_and_paper_named_does_not(grey_png, tmp_path,
                                                                                      monkeypatch, capsys):
    # auto resolved as on a CUDA machine; the fits themselves run on the CPU.
    import torch

    from napari_dip.engine import presets

    monkeypatch.setattr(presets, "resolve_device", lambda name="auto": torch.device("cuda:0"))
    out = tmp_path / "auto.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--iterations", "2", "--device", "cpu", "-q"]) == 0
    plan = capsys.readouterr().out.splitlines()[0]  # "auto on cpu": only the presets module pretends
    assert ", preset paper (auto on " in plan and "), by recorruption, noise gaussian (auto), stopping " in plan
    record = read_provenance(out)
    assert record["preset"] == "paper" and record["preset_requested"] == "auto"
    assert record["network"]["channels_down"] == [128] * 5
    assert record["fit"]["recorrupt_sigma"] > 0 and record["fit"]["adam_beta2"] == 0.95
    out = tmp_path / "paper.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--preset", "paper", "--iterations", "2",
                 "--device", "cpu", "-q"]) == 0
    assert ", preset paper, noise gaussian (auto), stopping " in capsys.readouterr().out.splitlines()[0]
    record = read_provenance(out)
    assert record["fit"]["recorrupt_sigma"] is None and record["fit"]["adam_beta2"] == 0.999


@pytest.mark.parametrize("device, available, started, expected", [
    ("auto", True, False, True),
    ("cuda:1", True, False, True),
    ("auto", True, True, False),  # CUDA already running in this process
    ("cpu", True, False, False),
    ("auto", False, False, False),  # no GPU
])
def test_cuda_start_is_pending_only_for_a_cuda_device_not_started_yet(device, available, started, expected,
                                                                       monkeypatch):
    import torch

    from napari_dip.engine.devices import cuda_start_pending

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: started)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if available else 0)
    assert cuda_start_pending(device) is expected


def test_the_cli_says_cuda_is_starting_before_the_seconds_it_takes(grey_png, tmp_path, monkeypatch, capsys):
    # As on a GPU machine whose CUDA has not started; the fit itself runs on the CPU.
    from napari_dip.engine import devices
    from napari_dip import restore

    said = []
    real_iter_restore = restore.iter_restore

    def iter_restore(*args, **kwargs):
        said.append("starting CUDA" in capsys.readouterr().err)  # before anything that could start it
        return real_iter_restore(*args, **kwargs)

    monkeypatch.setattr(devices, "cuda_start_pending", lambda name="auto": True)
    monkeypatch.setattr(restore, "iter_restore", iter_restore)
    out = tmp_path / "out.png"
    quiet_less = [a for a in FAST if a != "-q"]
    assert main(["denoise", str(grey_png), "-o", str(out), *quiet_less]) == 0
    assert said == [True]
    # Not with -q.
    assert main(["denoise", str(grey_png), "-o", str(out), "--overwrite", *FAST]) == 0
    assert "starting CUDA" not in capsys.readouterr().err and said == [True, False]
    # Nor for a command refused before the fit (a PNG cannot hold float results): CUDA never starts there.
    floats = tmp_path / "floats.tif"
    tifffile.imwrite(floats, smooth_image(32).astype(np.float32))
    assert main(["denoise", str(floats), "-o", str(tmp_path / "floats.png"), *quiet_less]) == 2
    err = capsys.readouterr().err
    assert "napari-dip: error" in err and "starting CUDA" not in err and said == [True, False]


def test_denoising_stops_with_the_default_trend_test_and_records_it(grey_png, tmp_path):
    # The trend test reaches the command line's fit and its provenance: for a fit by
    # recorruption (the CPU default) on a smoother score at a 0.2 % rise, for the paper's
    # way at 0.5 % (BENCHMARKS.md "The trend test at 0.5 %", "Scoring recorrupted fits").
    out = tmp_path / "out.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--iterations", "2", "--device", "cpu", "-q"]) == 0
    fit = read_provenance(out)["fit"]
    stopping = fit["stopping"]
    assert fit["recorrupt_sigma"] > 0 and fit["adam_beta2"] == 0.95
    assert stopping["rule"] == "validation" and stopping["rise"] == 0.002 and stopping["patience"] == 100
    assert stopping["smoothing"] == 0.99
    out = tmp_path / "paper-way.png"
    assert main(["denoise", str(grey_png), "-o", str(out), "--iterations", "2", "--no-recorrupt",
                 "--device", "cpu", "-q"]) == 0
    assert read_provenance(out)["fit"]["adam_beta2"] == 0.999
    stopping = read_provenance(out)["fit"]["stopping"]
    assert stopping["rule"] == "validation" and stopping["rise"] == 0.005 and stopping["smoothing"] == 0.9


def test_super_resolve_keeps_16_bit_and_scales_the_pixel_size(stack_tif, tmp_path):
    out = tmp_path / "sr.tif"
    assert main(["super-resolve", str(stack_tif), "-o", str(out), "--factor", "2", "--axes", "CYX", *FAST]) == 0
    result = read_image(out)
    assert result.data.shape == (2, 64, 64) and result.data.dtype == np.uint16
    assert result.resolution == pytest.approx((10.0, 10.0))  # twice as many pixels per cm
    assert read_provenance(out)["factor"] == 2


def test_inpaint_with_a_mask_file(grey_png, tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[10:16, 10:16] = 1
    mask_path = tmp_path / "mask.png"
    iio.imwrite(mask_path, mask)
    out = tmp_path / "filled.tif"
    assert main(["inpaint", str(grey_png), "--mask", str(mask_path), "-o", str(out), *FAST]) == 0
    assert tifffile.imread(out).shape == (32, 32)


def test_existing_output_is_not_overwritten_unless_asked(grey_png, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    assert main(["denoise", str(grey_png), "-o", str(out), *FAST]) == 2
    assert out.read_bytes() == b"precious"
    assert "exists" in capsys.readouterr().err
    assert main(["denoise", str(grey_png), "-o", str(out), "--overwrite", *FAST]) == 0
    assert iio.imread(out).shape == (32, 32)


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda d, g: ["denoise", str(d / "missing.png"), "-o", str(d / "o.png")], "no such file"),
        (lambda d, g: ["denoise", str(g), "-o", str(d / "o.jpg")], "unsupported file type"),
        (lambda d, g: ["denoise", str(g), "-o", str(d / "nodir" / "o.png")], "does not exist"),
        (lambda d, g: ["inpaint", str(g), "--mask", str(d / "small.png"), "-o", str(d / "o.png")], "mask has shape"),
        (lambda d, g: ["denoise", str(d / "tiny.png"), "-o", str(d / "o.png")], "at least 16 pixels"),
        (lambda d, g: ["denoise", str(d / "int32.tif"), "-o", str(d / "o.tif")], "not supported"),
        (lambda d, g: ["denoise", str(d / "broken.png"), "-o", str(d / "o.png")], "cannot be read"),
        (lambda d, g: ["denoise", str(g), "-o", str(d / "o.png"), "--device", "cuda:3"], "cuda"),
        (lambda d, g: ["denoise", str(g), "-o", "/sys/napari-dip-test.tif"], "cannot write to /sys"),
        (lambda d, g: ["denoise", str(g), "-o", "/proc/napari-dip-test.tif"], "cannot write to /proc"),
        (lambda d, g: ["denoise", str(g), "-o", str(g.with_suffix("")) + "/o.tif"], "is not a folder"),
        (lambda d, g: ["denoise", str(d / "flat.png"), "-o", str(d / "o.png")], "the image is constant"),
        (lambda d, g: ["denoise", str(g), "-o", str(d)], "is a folder; name an image file"),
    ],
)
def test_bad_input_exits_2_with_one_line(make_args, message, grey_png, tmp_path, capsys):
    iio.imwrite(tmp_path / "small.png", np.ones((8, 8), np.uint8))
    iio.imwrite(tmp_path / "tiny.png", np.ones((8, 8), np.uint8))
    iio.imwrite(tmp_path / "flat.png", np.full((32, 32), 128, np.uint8))
    grey_png.with_suffix("").write_bytes(b"a file, not a folder")
    tifffile.imwrite(tmp_path / "int32.tif", np.ones((32, 32), np.int32))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    args = make_args(tmp_path, grey_png)
    code = main([args[0], *FAST, *args[1:]])  # the case's own options come last and win
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("napari-dip: error:")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("option,value,message", [
    ("--learning-rate", "-1", "argument --learning-rate: must be above 0, got -1"),
    ("--learning-rate", "fast", "argument --learning-rate: expected a number, got 'fast'"),
    ("--reg-noise-std", "-0.1", "argument --reg-noise-std: must be at least 0, got -0.1"),
    ("--patience", "-3", "argument --patience: must be at least 1, got -3"),
    ("--iterations", "0", "argument --iterations: must be at least 1, got 0"),
    ("--channels", "2.5", "argument --channels: expected a whole number, got '2.5'"),
    ("--learning-rate", "nan", "argument --learning-rate: expected a finite number, got 'nan'"),
    ("--reg-noise-std", "inf", "argument --reg-noise-std: expected a finite number, got 'inf'"),
])
def test_a_bad_option_value_is_refused_by_the_options_name(option, value, message, grey_png, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["denoise", str(grey_png), "-o", str(tmp_path / "o.png"), option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_float_input_to_png_output_is_refused_before_the_fit(tmp_path, capsys):
    source = tmp_path / "float.tif"
    tifffile.imwrite(source, smooth_image(32))
    code = main(["denoise", str(source), "-o", str(tmp_path / "o.png"), *FAST[:-1], "--iterations", "100000"])
    assert code == 2 and "write a .tif" in capsys.readouterr().err  # returns at once, no 100000-step fit


def test_float_png_is_refused_before_the_fit(tmp_path):
    with pytest.raises(ValueError, match="write a .tif"):
        write_image(tmp_path / "f.png", ImageFile(np.zeros((16, 16), np.float32)))
    assert not list(tmp_path.iterdir())


def test_demo_prints_psnr_before_and_after(capsys):
    assert main(["demo", "--iterations", "6", "--size", "32", "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    assert "PSNR noisy" in out and "PSNR restored" in out and "time:" in out
    assert "6 iterations on cpu " + torch.backends.cpu.get_cpu_capability() in out  # the kernels, by name


def test_console_script_is_installed():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("napari-dip") or str(Path(sys.executable).parent / "napari-dip")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("napari-dip ")


# -- issue 8 ---------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["/sys/napari-dip-test.tif", "/proc/x.png"])
def test_an_unwritable_output_is_refused_before_the_fit(output, grey_png, capsys):
    # 100000 iterations: only a check before the fit returns at once
    code = main(["denoise", str(grey_png), "-o", output, *FAST[:-1], "--iterations", "100000", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("napari-dip: error: cannot write to") and err.count("\n") == 1


def test_check_writable_creates_no_file_and_leaves_none(tmp_path):
    assert io.check_writable(tmp_path / "o.tif") == tmp_path / "o.tif"
    assert not list(tmp_path.iterdir())


def test_a_late_write_failure_keeps_the_result_in_a_rescue_file(grey_png, tmp_path, monkeypatch, capsys):
    rescue_dir = tmp_path / "tmp"
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real_write = io._write_tiff

    def refuse_the_destination(path, image, provenance, kind):  # e.g. the disk filled up during the fit
        if path.parent == out_dir:
            raise PermissionError(13, "Permission denied", str(path))
        real_write(path, image, provenance, kind)

    monkeypatch.setattr(io, "_write_tiff", refuse_the_destination)
    out = out_dir / "out.tif"
    code = main(["denoise", str(grey_png), "-o", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 2 and "wrote" not in captured.out
    err = captured.err
    assert err.count("\n") == 1
    assert err.startswith(f"napari-dip: error: cannot write {out} (Permission denied); the result was saved to ")
    # Ours only: torch may make its own cache folder in the temporary folder it first sees.
    rescued = sorted(path for path in rescue_dir.iterdir() if path.name.startswith("napari-dip-"))
    assert len(rescued) == 1 and str(rescued[0]) in err and rescued[0].suffix == ".tif"
    assert tifffile.imread(rescued[0]).shape == (32, 32)
    assert read_provenance(rescued[0])["iterations_run"] == 4
    assert not list(out_dir.iterdir())  # nothing half-written at the destination


def test_published_masks_need_mask_known_and_an_inverted_one_is_warned_about(grey_png, tmp_path, capsys):
    holes = np.zeros((32, 32), bool)
    holes[10:16, 8:20] = True
    mask_path = tmp_path / "mask.png"
    iio.imwrite(mask_path, np.where(holes, 0, 255).astype(np.uint8))  # 255 = known
    out = tmp_path / "filled.tif"
    assert main(["inpaint", str(grey_png), "--mask", str(mask_path), "-o", str(out), "--mask-known", *FAST]) == 0
    assert capsys.readouterr().err == ""
    provenance = read_provenance(out)
    assert provenance["mask_marks"] == "known" and provenance["hole_fraction"] == pytest.approx(holes.mean(), abs=1e-6)
    assert main(["inpaint", str(grey_png), "--mask", str(mask_path), "-o", str(out), "--overwrite", *FAST]) == 0
    err = capsys.readouterr().err
    assert err.startswith("napari-dip: warning: the mask makes 93.0 % of the image holes") and err.count("\n") == 1
    assert "probably inverted" in err and "--mask-known" in err


def test_inpainting_writes_the_known_pixels_unchanged_unless_raw_output(grey_png, tmp_path):
    image = iio.imread(grey_png)
    holes = np.zeros((32, 32), np.uint8)
    holes[10:16, 8:20] = 1
    mask_path = tmp_path / "mask.png"
    iio.imwrite(mask_path, holes)
    kept, raw = tmp_path / "kept.tif", tmp_path / "raw.tif"
    assert main(["inpaint", str(grey_png), "--mask", str(mask_path), "-o", str(kept), *FAST]) == 0
    assert main(["inpaint", str(grey_png), "--mask", str(mask_path), "-o", str(raw), "--raw-output", *FAST]) == 0
    known = holes == 0
    np.testing.assert_array_equal(tifffile.imread(kept)[known], image[known])
    assert (tifffile.imread(raw)[known] != image[known]).any()
    assert read_provenance(kept)["keep_known"] is True and read_provenance(raw)["keep_known"] is False


def test_one_line_before_the_fit_says_what_runs(grey_png, stack_tif, tmp_path, capsys):
    args = [a for a in FAST if a not in ("--preset", "fast")]  # the default preset: auto
    assert main(["denoise", str(grey_png), "-o", str(tmp_path / "o.png"), *args]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(
        "denoise grey.png: YX 32x32 uint8 (PNG), preset fast (auto on cpu), by recorruption, noise gaussian (auto), "
        "stopping validation, device cpu, needs about "
    )
    assert read_provenance(tmp_path / "o.png")["preset"] == "fast"
    assert read_provenance(tmp_path / "o.png")["preset_requested"] == "auto"
    assert main(["super-resolve", str(stack_tif), "-o", str(tmp_path / "sr.tif"), "--factor", "2", *FAST,
                 "--preset", "paper", "--stop", "none", "--channel-axis", "0"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("super-resolve cells.tif: CYX 2x32x32 uint16 (TIFF, 2000.0 um/px), preset paper, "
                            "no automatic stopping, device cpu, needs about ")


def test_the_line_before_the_fit_says_when_recorruption_is_off_and_why(tmp_path, capsys):
    # Noise correlated between neighbours is fitted the paper's way: the restoration has
    # settled that before the fit, and the line says so (the preset alone would recorrupt).
    rng = np.random.default_rng(3)
    white = rng.normal(0, 0.2, (33, 33))
    correlated = (white[:-1, :-1] + white[1:, :-1] + white[:-1, 1:] + white[1:, 1:]) / 4
    ramp = np.linspace(0.2, 0.8, 32)[None, :] * np.ones((32, 1))
    path = tmp_path / "blotchy.tif"
    tifffile.imwrite(path, (np.clip(ramp + correlated, 0, 1) * 255).astype(np.uint8))
    out = tmp_path / "out.tif"
    assert main(["denoise", str(path), "-o", str(out), "--iterations", "2", "--device", "cpu", "-q"]) == 0
    plan = capsys.readouterr().out.splitlines()[0]
    assert ", preset fast (auto on cpu), recorruption off: the noise is correlated between neighbours (" in plan
    assert "by recorruption" not in plan
    assert read_provenance(out)["fit"]["recorrupt_sigma"] is None
    # A weighted photon-limited fit has a noise level per pixel: never recorrupted.
    counts = (rng.poisson(np.full((32, 32), 40.0) * (1 + ramp)) * 10 + 100).astype(np.uint16)
    path = tmp_path / "counts.tif"
    tifffile.imwrite(path, counts)
    out = tmp_path / "weighted.tif"
    assert main(["denoise", str(path), "-o", str(out), "--iterations", "2", "--device", "cpu", "-q",
                 "--noise", "poisson-gaussian", "--noise-fit", "weighted"]) == 0
    plan = capsys.readouterr().out.splitlines()[0]
    assert (", recorruption off: noise_fit='weighted' has a noise level per pixel, noise poisson-gaussian (as asked), "
            "stopping ") in plan
    assert read_provenance(out)["fit"]["recorrupt_sigma"] is None


def test_the_cli_asks_for_a_snapshot_every_two_seconds(grey_png, tmp_path, monkeypatch):
    from napari_dip import restore

    seen = {}
    real = restore.iter_restore

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(restore, "iter_restore", spy)
    args = [a for a in FAST if a != "-q"]
    assert main(["denoise", str(grey_png), "-o", str(tmp_path / "o.png"), *args]) == 0
    assert seen["snapshot_seconds"] == 2.0


@pytest.mark.parametrize(
    "rate,text",
    [(0.154, "6.5 s/it"), (0.5, "2.0 s/it"), (1.0, "1.0 it/s"), (27.31, "27.3 it/s"), (0.0, "? it/s"),
     (float("nan"), "? it/s")],
)
def test_slow_rates_are_shown_as_seconds_per_iteration(rate, text):
    assert format_rate(rate) == text


def test_progress_text_counts_to_the_expected_stop():
    assert format_duration(59.6) == "1:00" and format_duration(7322) == "2:02:02"
    # the stopping rule expects to end at 500: the bar and its ETA count to 500, not 3000
    assert bar_total(200, 500, 3000) == 500
    assert bar_total(600, 900, 3000) == 900  # a new best moved the end on
    assert bar_total(2900, 3200, 3000) == 3000  # never beyond the budget
    assert bar_total(700, 650, 3000) == 700  # nor behind the current iteration
    assert progress_postfix(200, 500, 0.5, 0.0042) == "2.0 s/it, ETA 10:00, loss 0.0042"
    assert progress_postfix(10, 500, 0.5, float("nan")) == "2.0 s/it, ETA 16:20"


def test_the_progress_bar_follows_the_snapshots(capsys):
    from napari_dip.cli import _progress

    def snap(iteration, expected, done=False):
        return SimpleNamespace(iteration=iteration, iterations=3000, expected_stop=expected, loss=0.01,
                               iterations_per_second=0.25, done=done)

    stream = [snap(10, 500), snap(300, 800), snap(740, 740, done=True)]
    assert list(_progress(iter(stream), 500, quiet=False)) == stream
    err = capsys.readouterr().err
    assert "4.0 s/it" in err and "740/740" in err and "/3000" not in err


def test_gui_without_a_display_says_so_without_importing_qt(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    for module in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6"):
        monkeypatch.setitem(sys.modules, module, None)  # importing any of them now fails
    assert main(["gui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-dip: error: no display") and err.count("\n") == 1
    # A display-less Qt platform chosen on purpose passes the check (and reaches the import).
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert main(["gui"]) == 2
    assert "napari is not installed" in capsys.readouterr().err


# -- issue 10: axes and what the microscope recorded --------------------------------------

TINY = ["--preset", "fast", "--channels", "8", "--iterations", "2", "--device", "cpu", "-q"]


def _noisy_stack(shape, seed=0):
    """uint16 planes with structure and noise, the last two axes 32x32 (Y, X)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:32, :32]
    base = (np.sin(x / 5) + np.cos(y / 7)) * 1000 + 3000
    return (base + rng.normal(0, 200, shape)).clip(0, 65535).astype(np.uint16)


@pytest.fixture
def imagej_zyx(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, _noisy_stack((3, 32, 32)), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.0, "finterval": 2.5})
    return path


def test_an_imagej_z_stack_comes_back_as_one_with_its_calibration(imagej_zyx, tmp_path, capsys):
    out = tmp_path / "restored.tif"
    assert main(["denoise", str(imagej_zyx), "-o", str(out), *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("denoise stack.tif: ZYX 3x32x32 uint16 (ImageJ, 0.2 um/px, z 1.0 um, t 2.5 s), "
                        "3 planes warm-started, preset fast, by recorruption, noise gaussian (auto), "
                        "stopping validation, device cpu, needs about 0.1 GiB")
    assert lines[-1].startswith(f"wrote {out} (3 planes, ")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.uint16
        meta = tif.imagej_metadata
        assert (meta["unit"], meta["spacing"], meta["finterval"]) == ("um", 1.0, 2.5)
        assert tif.pages[0].resolution == pytest.approx((5.0, 5.0))
    provenance = read_provenance(out)
    assert provenance["axes"] == "ZYX" and provenance["planes"] == 3 and provenance["warm_start"] is True
    results = provenance["plane_results"]
    assert [r["index"] for r in results] == [[0], [1], [2]]
    assert [r["warm_start_from"] for r in results] == [None, [0], [1]]
    assert all(r["iterations_run"] == 2 and r["stop_reason"] == "budget" for r in results)
    assert provenance["iterations_run"] == 6 and provenance["stop_reasons"] == {"budget": 3}


def test_a_drifting_time_lapse_says_which_planes_started_afresh(tmp_path, capsys):
    from skimage import data

    camera = data.camera()
    # One pixel down and right a frame: x2, frame 2 is 4 px of the result from frame 0.
    frames = np.stack([camera[200 + k : 232 + k, 200 + k : 232 + k] for k in range(4)])
    source = tmp_path / "drift.tif"
    tifffile.imwrite(source, frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "sr.tif"
    assert main(["super-resolve", str(source), "-o", str(out), "--factor", "2", *TINY]) == 0
    assert ("1 fitted afresh where the picture had drifted more than 3 px from its warm-start chain's first plane"
            in capsys.readouterr().out.splitlines()[-1])
    results = read_provenance(out)["plane_results"]
    assert [r["warm_start_from"] for r in results] == [None, [0], None, [2]]
    assert [r["warm_start_restarted"] for r in results] == [False, False, True, False]
    assert results[0]["drift"] is None and [r["drift"]["from_plane"] for r in results[1:]] == [0, 0, 2]
    assert results[2]["drift"]["pixels"] > results[2]["drift"]["restart_above_pixels"] == 3.0
    assert np.array_equal(tifffile.imread(source), frames)  # the input is left as it was


def test_super_resolving_a_hyperstack_divides_only_the_pixel_width_and_height(tmp_path):
    source = tmp_path / "hyper.tif"
    tifffile.imwrite(source, _noisy_stack((2, 2, 2, 32, 32)), imagej=True, resolution=(5.0, 4.0),
                     metadata={"axes": "TZCYX", "unit": "um", "spacing": 0.5, "finterval": 30.0, "tunit": "min"})
    out = tmp_path / "sr.tif"
    assert main(["super-resolve", str(source), "-o", str(out), "--factor", "2", *TINY]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX" and tif.series[0].shape == (2, 2, 2, 64, 64)
        meta = tif.imagej_metadata
        assert (meta["unit"], meta["spacing"], meta["finterval"], meta["tunit"]) == ("um", 0.5, 30.0, "min")
        assert tif.pages[0].resolution == pytest.approx((10.0, 8.0))  # pixels per um: twice as many
    provenance = read_provenance(out)
    assert provenance["factor"] == 2 and provenance["planes"] == 4 and provenance["plane_axes"] == "TZ"
    assert [r["index"] for r in provenance["plane_results"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_an_ome_tiff_stays_ome_with_its_physical_sizes(tmp_path, capsys):
    source = tmp_path / "cells.ome.tif"
    tifffile.imwrite(source, _noisy_stack((2, 32, 32)), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 2.0})
    out = tmp_path / "sr.ome.tif"
    assert main(["super-resolve", str(source), "-o", str(out), "--factor", "2", "--no-warm-start", *TINY]) == 0
    assert "ZYX 2x32x32 uint16 (OME-TIFF, 0.3 um/px, z 2.0 um), 2 planes fitted independently" in capsys.readouterr().out
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX" and tif.series[0].shape == (2, 64, 64)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert pixels["PhysicalSizeX"] == pytest.approx(0.15) and pixels["PhysicalSizeY"] == pytest.approx(0.15)
        assert pixels["PhysicalSizeZ"] == 2.0
    provenance = read_provenance(out)
    assert provenance["warm_start"] is False
    assert [r["warm_start_from"] for r in provenance["plane_results"]] == [None, None]


def test_a_stack_without_axes_is_refused_with_a_hint_and_runs_with_axes(tmp_path, capsys):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, _noisy_stack((5, 32, 32)), resolution=(5000.0, 5000.0), resolutionunit="CENTIMETER")
    out = tmp_path / "o.tif"
    assert main(["denoise", str(source), "-o", str(out), *TINY[:-3], "--iterations", "100000", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("napari-dip: error: plain.tif does not say what its axes are")
    assert "5x32x32" in err and "--axes ZYX" in err and "CYX" in err
    assert not out.exists()
    assert main(["denoise", str(source), "-o", str(out), "--axes", "zyx", *TINY]) == 0
    assert capsys.readouterr().out.startswith("denoise plain.tif: ZYX 5x32x32 uint16 (TIFF, 2.0 um/px), 5 planes")
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (5, 32, 32)  # no --axes needed next time
        assert tif.pages[0].resolution == pytest.approx((5000.0, 5000.0)) and tif.pages[0].resolutionunit == 3
    assert read_image(out).axes == "ZYX"


@pytest.mark.parametrize("axes,message", [("ZYXC", "names 4 dimensions"), ("ZQX", "unknown letter")])
def test_bad_axes_exit_2_before_the_fit(axes, message, imagej_zyx, tmp_path, capsys):
    assert main(["denoise", str(imagej_zyx), "-o", str(tmp_path / "o.tif"), "--axes", axes, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "o.tif").exists()


def test_a_stack_shows_which_plane_runs(imagej_zyx, tmp_path, capsys):
    args = [a for a in TINY if a != "-q"]
    assert main(["denoise", str(imagej_zyx), "-o", str(tmp_path / "o.tif"), *args]) == 0
    err = capsys.readouterr().err
    assert "plane 1/3" in err and "plane 3/3" in err


def test_a_constant_plane_is_copied_through_and_recorded(tmp_path):
    data = _noisy_stack((3, 32, 32))
    data[0] = 1000  # a blank first plane: the settings come from the first fitted plane
    source = tmp_path / "blank.tif"
    tifffile.imwrite(source, data, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "o.tif"
    assert main(["denoise", str(source), "-o", str(out), *TINY]) == 0
    np.testing.assert_array_equal(tifffile.imread(out)[0], data[0])
    provenance = read_provenance(out)
    assert [r["stop_reason"] for r in provenance["plane_results"]] == ["constant", "budget", "budget"]
    assert provenance["fit"]["iterations"] == 2 and provenance["stop_reasons"] == {"constant": 1, "budget": 2}


def test_the_line_before_the_fit_shows_the_memory_it_needs():
    from types import SimpleNamespace

    from napari_dip.axes import layout_for
    from napari_dip.cli import _memory_needed
    from napari_dip.engine.fit import estimate_memory_bytes
    from napari_dip.engine.presets import network_for

    args = SimpleNamespace(command="super-resolve", channels=None, factor=4)
    text = _memory_needed(args, "paper", layout_for((512, 512, 3), "YXC"))
    expected = estimate_memory_bytes(network_for("super-resolve", "paper"), 3, 2048, 2048) / 2**30
    assert text == f", needs about {expected:.1f} GiB"
    assert expected > 10  # a 2048² paper fit is large: worth saying before it starts
    small = _memory_needed(SimpleNamespace(command="denoise", channels=8, factor=None), "fast", layout_for((64, 64)))
    assert float(small.split()[-2]) < expected


def test_the_result_never_replaces_its_input_or_mask(grey_png, tmp_path, capsys):
    before = grey_png.read_bytes()
    assert main(["denoise", str(grey_png), "-o", str(grey_png), "--overwrite", *FAST]) == 2
    assert "is the input image" in capsys.readouterr().err
    mask = tmp_path / "mask.png"
    holes = np.zeros((32, 32), np.uint8)
    holes[8:12, 8:12] = 255
    iio.imwrite(mask, holes)
    assert main(["inpaint", str(grey_png), "--mask", str(mask), "-o", str(mask), "--overwrite", *FAST]) == 2
    assert "is the mask" in capsys.readouterr().err
    assert grey_png.read_bytes() == before and np.array_equal(iio.imread(mask), holes)


def test_the_plane_bar_names_the_next_plane_from_its_first_drawing(capsys):
    from types import SimpleNamespace

    from napari_dip.cli import _plane_progress

    def snap(iteration, done=False):
        return SimpleNamespace(iteration=iteration, expected_stop=40, iterations=100, done=done,
                               iterations_per_second=10.0, loss=0.1)

    pairs = [((0,), snap(10)), ((0,), snap(40, done=True)), ((1,), snap(10)), ((1,), snap(40, done=True))]
    assert [index for index, _ in _plane_progress(iter(pairs), 2, 40, quiet=False)] == [(0,), (0,), (1,), (1,)]
    drawn = [part.strip() for part in capsys.readouterr().err.replace("\n", "\r").split("\r") if part.strip()]
    assert any(part.startswith("plane 2/2:") for part in drawn)
    # Between plane 1's drawings and plane 2's there is no "plane 1/2" at 0 % other than the
    # bar's first drawing (the reset for plane 2 used to draw one under the old name).
    first_of_two = next(i for i, part in enumerate(drawn) if part.startswith("plane 2/2"))
    last_of_one = max(i for i, part in enumerate(drawn) if part.startswith("plane 1/2"))
    assert last_of_one < first_of_two
    assert last_of_one == 0 or "  0%" not in drawn[last_of_one], drawn


def test_axes_that_contradict_the_files_own_are_warned_about(imagej_zyx, tmp_path, capsys):
    assert main(["denoise", str(imagej_zyx), "-o", str(tmp_path / "t.tif"), "--axes", "TYX", *TINY]) == 0
    assert "napari-dip: warning: --axes TYX overrides the file's own axes ZYX" in capsys.readouterr().err
    assert main(["denoise", str(imagej_zyx), "-o", str(tmp_path / "z.tif"), "--axes", "zyx", *TINY]) == 0
    assert "warning" not in capsys.readouterr().err  # the same axes, said again


def test_a_stack_whose_plane_diverges_names_the_plane_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from napari_dip import restore

    monkeypatch.setattr(restore, "Fitter", diverging_at(restore.Fitter, 3))
    frames = _noisy_stack((4, 32, 32))
    source = tmp_path / "series.tif"
    tifffile.imwrite(source, frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out.tif"
    assert main(["denoise", str(source), "-o", str(out), "--no-warm-start", *FAST]) == 2
    assert "napari-dip: error: plane 3 of 4 (T=2): the fit diverged 21 times" in capsys.readouterr().err
    assert not out.exists()
    assert np.array_equal(tifffile.imread(source), frames)
