"""The command line end to end, on tiny images (a few iterations of a narrow network)."""

import numpy as np
import pytest
import tifffile
import imageio.v3 as iio

from napari_dip.cli import main
from napari_dip.io import ImageFile, read_image, read_provenance, write_image
from tiny import smooth_image

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


def test_super_resolve_keeps_16_bit_and_scales_the_pixel_size(stack_tif, tmp_path):
    out = tmp_path / "sr.tif"
    assert main(["super-resolve", str(stack_tif), "-o", str(out), "--factor", "2", *FAST]) == 0
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
    ],
)
def test_bad_input_exits_2_with_one_line(make_args, message, grey_png, tmp_path, capsys):
    iio.imwrite(tmp_path / "small.png", np.ones((8, 8), np.uint8))
    iio.imwrite(tmp_path / "tiny.png", np.ones((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "int32.tif", np.ones((32, 32), np.int32))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    args = make_args(tmp_path, grey_png)
    code = main([args[0], *FAST, *args[1:]])  # the case's own options come last and win
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("napari-dip: error:")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.tif").exists()


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


def test_console_script_is_installed():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("napari-dip") or str(Path(sys.executable).parent / "napari-dip")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("napari-dip ")
