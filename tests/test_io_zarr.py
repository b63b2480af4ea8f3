"""Reading OME-Zarr images (napari_dip.ome_zarr, through io.read_image), the single-file
command and the batch on them, and the errors: images written here with zarr directly in
the OME-NGFF 0.4 (Zarr v2) and 0.5 (Zarr v3) layouts. Fits are tiny."""

import sys

import numpy as np
import pytest
import tifffile

from napari_dip.batch import restore_files
from napari_dip.batch.inputs import plan_items
from napari_dip.batch.records import file_sha256
from napari_dip.cli import main
from napari_dip.errors import InputError
from napari_dip.io import check_writable, read_image, read_provenance
from tiny import smooth_image

zarr = pytest.importorskip("zarr")  # in the testing extra; skipped only where it is missing

FAST = ["--preset", "fast", "--channels", "8", "--iterations", "4", "--device", "cpu", "-q"]
AXES_TCZYX = [
    {"name": "t", "type": "time", "unit": "second"},
    {"name": "c", "type": "channel"},
    {"name": "z", "type": "space", "unit": "micrometer"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def _planes(depth: int, size: int = 32) -> np.ndarray:
    return np.stack([(smooth_image(size, seed=k) * 4000 + 100).astype(np.uint16) for k in range(depth)])


def write_ome_zarr(path, data, scale, *, version="0.4", axes=AXES_TCZYX, shared_scale=None, name="cells"):
    """An OME-Zarr image as the specification lays it out: a group whose ``multiscales``
    attribute lists level ``0`` (``data``, pixel size ``scale``) and a level ``1`` at half
    the resolution in Y and X (whose values differ, to see that level 0 is the one read)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=data.shape)[...] = data
    half = data[..., ::2, ::2] + 1
    group.create_array("1", shape=half.shape, dtype=half.dtype)[...] = half
    coarse = [*scale[:-2], scale[-2] * 2, scale[-1] * 2]
    multiscale = {
        "version": version, "name": name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]},
                     {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": coarse}]}],
    }
    if shared_scale is not None:
        multiscale["coordinateTransformations"] = [{"type": "scale", "scale": shared_scale}]
    if version == "0.4":
        group.attrs["multiscales"] = [multiscale]
    else:  # 0.5: the OME metadata under "ome", the version there and not per multiscale
        del multiscale["version"]
        group.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    return path


@pytest.fixture
def zstack(tmp_path):
    """A (T=1, C=1, Z=3, 32, 32) uint16 stack, 0.2 um pixels, 1.5 um between planes."""
    data = _planes(3)[None, None]
    return write_ome_zarr(tmp_path / "cells.ome.zarr", data, [1.0, 1.0, 1.5, 0.2, 0.2]), data[0, 0]


def test_level_0_with_its_axes_and_pixel_sizes(zstack):
    path, expected = zstack
    image = read_image(path)
    np.testing.assert_array_equal(image.data, expected)  # level 0, not level 1; T and C of 1 dropped
    assert image.data.dtype == np.uint16
    assert image.axes == "ZYX"
    assert image.kind == "ome-zarr"
    calibration = image.calibration
    assert (calibration.x, calibration.y, calibration.unit) == (0.2, 0.2, "µm")
    assert (calibration.z, calibration.z_unit) == (1.5, "µm")
    assert calibration.t is None  # a T axis of one frame is dropped, with its interval
    assert image.describe() == "OME-Zarr, 0.2 um/px, z 1.5 um"


def test_version_0_5_zarr_v3_and_a_scale_shared_by_every_level(tmp_path):
    data = _planes(2)[None].transpose(1, 0, 2, 3)  # C=2, Z=1 -> (C, Z, Y, X)
    axes = [a for a in AXES_TCZYX if a["name"] != "t"]
    path = write_ome_zarr(tmp_path / "two.zarr", data, [1.0, 1.0, 0.5, 0.25], version="0.5", axes=axes,
                          shared_scale=[1.0, 1.0, 1.0, 0.4])
    assert (path / "zarr.json").is_file()  # really the Zarr v3 layout
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data[:, 0])
    assert image.axes == "CYX"
    # The level's scale times the scale shared by all levels: y 0.5, x 0.25 * 0.4.
    assert image.calibration.y == pytest.approx(0.5) and image.calibration.x == pytest.approx(0.1)


def test_unknown_axis_names_leave_the_axes_to_the_user(tmp_path):
    data = _planes(2)
    axes = [{"name": "angle", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    image = read_image(write_ome_zarr(tmp_path / "odd.zarr", data, [1.0, 1.0, 1.0], axes=axes))
    assert image.axes is None and image.data.shape == (2, 32, 32)


def test_what_cannot_be_read_is_one_clear_error(tmp_path, monkeypatch):
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    plain.create_array("0", shape=(8, 8), dtype="u1")
    with pytest.raises(InputError, match="without OME-Zarr 'multiscales' metadata"):
        read_image(tmp_path / "plain.zarr")
    with pytest.raises(InputError, match="no such OME-Zarr folder"):
        read_image(tmp_path / "missing.ome.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="not a Zarr image"):
        read_image(tmp_path / "empty.zarr")
    # OME-Zarr is read, not written: a .zarr output is refused with the way out.
    with pytest.raises(InputError, match="writes TIFF"):
        check_writable(tmp_path / "result.ome.zarr")


def test_without_the_zarr_package_the_error_says_what_to_install(zstack, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now raises ImportError
    with pytest.raises(InputError, match=r"needs the zarr package: pip install 'napari-dip\[zarr\]'"):
        read_image(zstack[0])


def test_the_single_file_command_writes_an_ome_tiff_with_the_calibration(zstack, tmp_path):
    path, expected = zstack
    out = tmp_path / "restored.ome.tif"
    assert main(["denoise", str(path), "-o", str(out), *FAST]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        result = tif.series[0].asarray()
    assert result.shape == expected.shape and result.dtype == np.uint16
    written = read_image(out).calibration
    assert (written.x, written.y, written.z) == (0.2, 0.2, 1.5)
    assert read_provenance(out)["source"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.ome.zarr", "restored.ome.tif"]


def test_batch_finds_zarr_folders_writes_ome_tiffs_and_resumes(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    plane = _planes(1)[None, None]  # (1, 1, 1, 32, 32): one plane
    write_ome_zarr(data / "a.ome.zarr", plane, [1.0, 1.0, 1.0, 0.3, 0.3])
    write_ome_zarr(data / "b.zarr", plane + 7, [1.0, 1.0, 1.0, 0.4, 0.4])
    (data / "notes.zarr.txt").write_text("not an image")
    # A folder and a glob find the Zarr folders (each one image, not a folder to list).
    assert [i.input.name for i in plan_items([data], tmp_path / "o", "denoise")] == ["a.ome.zarr", "b.zarr"]
    items = plan_items([str(data / "*.zarr")], tmp_path / "o", "denoise")
    assert [i.output.name for i in items] == ["a.ome.tif", "b.ome.tif"]
    assert [i.input.name for i in plan_items([data / "a.ome.zarr"], tmp_path / "o", "denoise")] == ["a.ome.zarr"]

    out = tmp_path / "out"
    fit = {"preset": "fast", "channels": 8, "iterations": 4, "device": "cpu"}
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fit)
    assert [(r["status"], r["error"]) for r in rows] == [("done", ""), ("done", "")]
    assert read_image(out / "a.ome.tif").calibration.x == pytest.approx(0.3)
    assert read_image(out / "b.ome.tif").calibration.x == pytest.approx(0.4)
    assert read_image(out / "b.ome.tif").data.shape == (32, 32)
    again = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fit)
    assert [r["status"] for r in again] == ["skipped", "skipped"]

    # A changed chunk changes the input's hash: that image is redone, the other skipped.
    before = file_sha256(data / "b.zarr")
    zarr.open_group(str(data / "b.zarr"), mode="r+")["0"][0, 0, 0, 0, 0] = 9
    assert file_sha256(data / "b.zarr") != before
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fit)
    assert [r["status"] for r in rows] == ["skipped", "done"]


def test_two_inputs_whose_results_share_a_name_are_refused(tmp_path):
    plane = _planes(1)[None, None]
    write_ome_zarr(tmp_path / "a.zarr", plane, [1.0, 1.0, 1.0, 0.3, 0.3])
    write_ome_zarr(tmp_path / "a.ome.zarr", plane, [1.0, 1.0, 1.0, 0.3, 0.3])
    with pytest.raises(InputError, match=r"same name for their results \(a.ome.tif\)"):
        plan_items([tmp_path], tmp_path / "out", "denoise")
