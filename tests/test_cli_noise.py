"""The command line's noise models (--noise, --offset, --gain) and trust outputs
(--uncertainty, --residual), on a tiny 16-bit photon-limited image."""

import numpy as np
import pytest
import tifffile

from napari_dip.cli import main
from napari_dip.io import read_image, read_provenance
from tiny import smooth_image

FAST = ["--preset", "fast", "--channels", "8", "--iterations", "4", "--device", "cpu", "-q"]


@pytest.fixture
def cells_tif(tmp_path):
    rng = np.random.default_rng(0)
    signal = 20 + 800 * smooth_image(48)
    raw = np.round(100 + 2.0 * rng.poisson(signal / 2.0) + rng.normal(0, 3, signal.shape)).astype(np.uint16)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, raw)
    return path


def test_noise_offset_and_gain_reach_the_provenance(cells_tif, tmp_path):
    out = tmp_path / "out.tif"
    args = ["denoise", str(cells_tif), "-o", str(out), "--noise", "poisson-gaussian", "--noise-fit", "weighted",
            "--offset", "100", "--gain", "2", *FAST]
    assert main(args) == 0
    noise = read_provenance(out)["noise"]
    assert noise["model"] == "poisson-gaussian" and noise["fit"] == "weighted"
    assert noise["offset"] == 100 and noise["gain_given"] == 2 and noise["a"][0] == pytest.approx(2.0)
    assert read_image(out).data.dtype == np.uint16


def test_uncertainty_and_residual_files(cells_tif, tmp_path, capsys):
    out, spread, residual = tmp_path / "out.tif", tmp_path / "spread.tif", tmp_path / "residual.tif"
    args = ["denoise", str(cells_tif), "-o", str(out), "--runs", "2", "--uncertainty", str(spread),
            "--residual", str(residual), *FAST]
    assert main(args) == 0
    source = read_image(cells_tif).data
    for path, content in ((spread, "uncertainty"), (residual, "residual")):
        data = read_image(path).data
        assert data.shape == source.shape and data.dtype == np.float32
        assert read_provenance(path)["content"] == content
    assert read_image(spread).data.max() > 0  # two different runs
    printed = capsys.readouterr().out
    assert "spread.tif (uncertainty)" in printed and "residual.tif (residual)" in printed


def test_uncertainty_needs_runs_and_a_tiff(cells_tif, tmp_path, capsys):
    out = tmp_path / "out.tif"
    assert main(["denoise", str(cells_tif), "-o", str(out), "--uncertainty", str(tmp_path / "u.tif"), *FAST]) == 2
    assert "--runs 2" in capsys.readouterr().err
    assert main(["denoise", str(cells_tif), "-o", str(out), "--runs", "2", "--uncertainty",
                 str(tmp_path / "u.png"), *FAST]) == 2
    assert ".tif" in capsys.readouterr().err
    assert not out.exists()


def test_extra_outputs_never_replace_the_mask_or_each_other_and_3d_has_no_spread(cells_tif, tmp_path, capsys):
    out = tmp_path / "out.tif"
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, (smooth_image(48) > 0.7).astype(np.uint8))
    before = mask.read_bytes()
    # Even with --overwrite, --uncertainty may not name the mask the fit reads.
    assert main(["inpaint", str(cells_tif), "--mask", str(mask), "-o", str(out), "--runs", "2",
                 "--uncertainty", str(mask), "--overwrite", *FAST]) == 2
    assert "mask" in capsys.readouterr().err and mask.read_bytes() == before and not out.exists()
    same = tmp_path / "same.tif"
    assert main(["denoise", str(cells_tif), "-o", str(out), "--runs", "2", "--uncertainty", str(same),
                 "--residual", str(same), *FAST]) == 2
    assert "another output" in capsys.readouterr().err and not out.exists()
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([tifffile.imread(cells_tif)] * 3), imagej=True, metadata={"axes": "ZYX"})
    assert main(["denoise", str(stack), "-o", str(out), "--3d", "--runs", "2", "--uncertainty",
                 str(tmp_path / "u.tif"), *FAST]) == 2
    assert "--3d" in capsys.readouterr().err and not out.exists()


def test_photon_limited_images_are_recorrupted_by_default_and_no_recorrupt_keeps_the_papers_way(cells_tif, tmp_path):
    before = cells_tif.read_bytes()
    default, paper = tmp_path / "default.tif", tmp_path / "paper.tif"
    base = ["denoise", str(cells_tif), "--noise", "poisson-gaussian", *FAST]
    assert main([*base, "-o", str(default)]) == 0
    assert main([*base, "-o", str(paper), "--no-recorrupt"]) == 0
    recorrupted, papers = read_provenance(default), read_provenance(paper)
    assert recorrupted["noise"]["fit"] == "gat" and recorrupted["recorruption_note"] is None
    assert recorrupted["fit"]["recorrupt_sigma"] == pytest.approx(recorrupted["noise_sigma_estimate"])
    assert recorrupted["network"]["input_channels"] == 1  # the image itself is the input
    assert papers["fit"]["recorrupt_sigma"] is None and papers["fit"]["reg_noise_std"] > 0
    assert cells_tif.read_bytes() == before


def test_the_line_before_the_fit_names_the_noise_model_and_camera_values_it_uses(cells_tif, tmp_path, capsys):
    out = tmp_path / "out.tif"
    assert main(["denoise", str(cells_tif), "-o", str(out), *FAST]) == 0
    assert ", noise poisson-gaussian (auto), " in capsys.readouterr().out.splitlines()[0]
    assert main(["denoise", str(cells_tif), "-o", str(out), "--overwrite", "--noise", "poisson-gaussian",
                 "--gain", "2", "--offset", "100", *FAST]) == 0
    captured = capsys.readouterr()
    assert ", noise poisson-gaussian (as asked, gain 2, offset 100), " in captured.out.splitlines()[0]
    assert "warning" not in captured.err


@pytest.mark.parametrize("options,warning", [
    (["--noise", "gaussian", "--gain", "2", "--offset", "100"],
     "the gain and offset describe Poisson-Gaussian noise; the noise is taken as Gaussian (requested), "
     "which does not use them"),
    (["--noise", "poisson-gaussian", "--offset", "5000"], "the offset 5000 is at or above the image's values"),
])
def test_camera_values_that_cannot_do_what_was_meant_are_warned_about(options, warning, cells_tif, tmp_path, capsys):
    assert main(["denoise", str(cells_tif), "-o", str(tmp_path / "out.tif"), *options, *FAST]) == 0
    assert f"napari-dip: warning: {warning}" in capsys.readouterr().err
