"""Files keep what a microscope recorded: axes, pixel size, Z step, frame interval, and the
kind of TIFF (ImageJ hyperstack, OME-TIFF, plain), read back with tifffile itself."""

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dip.errors import InputError
from napari_dip.io import (
    Calibration,
    ImageFile,
    imagej_conversion,
    project_axes,
    read_image,
    read_provenance,
    write_image,
)

PROVENANCE = {"task": "denoise", "axes": "ZYX", "note": "µm and all"}


def _ramp(shape, dtype=np.uint16):
    return (np.arange(np.prod(shape)) % 4000 + 10).reshape(shape).astype(dtype)


@pytest.mark.parametrize(
    "file_axes,axes",
    [("YX", "YX"), ("ZYX", "ZYX"), ("TZCYX", "TZCYX"), ("TYX", "TYX"), ("CYX", "CYX"), ("YXS", "YXC"),
     ("ZYXS", "ZYXC"), ("QYX", None), ("IYX", None), ("AYX", None), ("CYXS", None), ("ZX", None)],
)
def test_tifffile_axes_in_the_api_letters(file_axes, axes):
    assert project_axes(file_axes) == axes


def test_imagej_hyperstack_is_read_with_axes_and_calibration(tmp_path):
    path = tmp_path / "hyper.tif"
    data = _ramp((2, 3, 2, 32, 32))
    tifffile.imwrite(path, data, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TZCYX", "unit": "um", "spacing": 1.5, "finterval": 2.5, "Info": "scope 7"})
    image = read_image(path)
    assert image.kind == "imagej" and image.axes == "TZCYX" and image.file_axes == "TZCYX"
    np.testing.assert_array_equal(image.data, data)
    c = image.calibration
    assert (c.x, c.y, c.unit, c.z, c.z_unit, c.t, c.t_unit) == pytest.approx((0.2, 0.2, "um", 1.5, "um", 2.5, "s"))
    assert image.describe() == "ImageJ, 0.2 um/px, z 1.5 um, t 2.5 s"


@pytest.mark.parametrize("axes,shape", [("ZYX", (3, 32, 32)), ("TZCYX", (2, 3, 2, 32, 32))])
@pytest.mark.parametrize("factor", [None, 2])
def test_imagej_round_trip_keeps_the_calibration(axes, shape, factor, tmp_path):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _ramp(shape), imagej=True, resolution=(5.0, 4.0),
                     metadata={"axes": axes, "unit": "um", "spacing": 0.75, "finterval": 3.0, "tunit": "min",
                               "Info": "Objective: 60x"})
    image = read_image(source)
    f = factor or 1
    result = _ramp(shape[:-2] + (32 * f, 32 * f))
    out = write_image(tmp_path / "out.tif", image.zoomed(result, factor), PROVENANCE)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == axes
        meta = tif.imagej_metadata
        assert meta["unit"] == "um" and meta["spacing"] == 0.75 and meta["finterval"] == 3.0
        assert meta["tunit"] == "min" and meta["Info"] == "Objective: 60x"
        assert tif.pages[0].resolution == pytest.approx((5.0 * f, 4.0 * f))  # pixels per um in X, Y
        np.testing.assert_array_equal(tif.asarray(), result)
    assert read_provenance(out) == PROVENANCE
    again = read_image(out)
    assert again.calibration.x == pytest.approx(0.2 / f) and again.calibration.y == pytest.approx(0.25 / f)
    assert again.calibration.z == 0.75 and again.calibration.t == 3.0


def test_imagej_rgb_stays_rgb_and_a_second_run_replaces_the_record(tmp_path):
    source = tmp_path / "rgb.tif"
    tifffile.imwrite(source, _ramp((2, 32, 32, 3), np.uint8), imagej=True, photometric="rgb",
                     metadata={"axes": "ZYXS", "unit": "um", "spacing": 2.0})
    image = read_image(source)
    assert image.axes == "ZYXC" and image.file_axes == "ZYXS"
    first = write_image(tmp_path / "first.tif", image, {"run": 1})
    second = write_image(tmp_path / "second.tif", read_image(first), {"run": 2})
    with tifffile.TiffFile(second) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYXS" and tif.imagej_metadata["spacing"] == 2.0
    assert read_provenance(second) == {"run": 2}


def test_imagej_takes_only_its_dtypes_and_says_so(tmp_path):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _ramp((3, 32, 32)), imagej=True, metadata={"axes": "ZYX"})
    image = read_image(source)
    assert imagej_conversion(image, tmp_path / "o.tif") is None
    as_float64 = image.zoomed(image.data.astype(np.float64), None)
    assert "written as float32" in imagej_conversion(as_float64, tmp_path / "o.tif")
    assert imagej_conversion(as_float64, tmp_path / "o.png") is None
    out = write_image(tmp_path / "o.tif", as_float64)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].dtype == np.float32


def test_ome_round_trip_keeps_physical_sizes(tmp_path):
    source = tmp_path / "in.ome.tif"
    data = _ramp((3, 2, 32, 32))
    tifffile.imwrite(source, data, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "TimeIncrement": 4.0,
        "Channel": {"Name": ["DAPI", "GFP"]}})
    image = read_image(source)
    assert image.kind == "ome" and image.axes == "ZCYX"
    assert image.describe() == "OME-TIFF, 0.2 um/px, z 1.0 um, t 4.0 s"
    result = _ramp((3, 2, 64, 64))
    out = write_image(tmp_path / "out.ome.tif", image.zoomed(result, 2), PROVENANCE)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZCYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert pixels["PhysicalSizeX"] == pytest.approx(0.1) and pixels["PhysicalSizeY"] == pytest.approx(0.1)
        assert pixels["PhysicalSizeZ"] == 1.0 and pixels["TimeIncrement"] == 4.0
        assert [c["Name"] for c in pixels["Channel"]] == ["DAPI", "GFP"]
    assert read_provenance(out) == PROVENANCE


def test_plain_tiff_keeps_its_resolution_tags_and_gains_its_axes(tmp_path):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, _ramp((5, 32, 32)), resolution=(5000.0, 5000.0), resolutionunit="CENTIMETER")
    image = read_image(source)
    assert image.kind == "tiff" and image.file_axes == "QYX" and image.axes is None  # Q: tifffile cannot tell
    assert image.describe() == "TIFF, 2.0 um/px"
    image.axes = "ZYX"  # what --axes says
    out = write_image(tmp_path / "out.tif", image.zoomed(_ramp((5, 64, 64)), 2), PROVENANCE)
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_imagej and not tif.is_ome
        assert tif.series[0].axes == "ZYX"  # the next run needs no --axes
        assert tif.pages[0].resolution == pytest.approx((10000.0, 10000.0)) and tif.pages[0].resolutionunit == 3
    assert read_provenance(out) == PROVENANCE
    assert read_image(out).axes == "ZYX"


def test_png_axes(tmp_path):
    iio.imwrite(tmp_path / "grey.png", _ramp((32, 32), np.uint8))
    iio.imwrite(tmp_path / "rgb.png", _ramp((32, 32, 3), np.uint8))
    assert (read_image(tmp_path / "grey.png").axes, read_image(tmp_path / "grey.png").kind) == ("YX", "png")
    assert read_image(tmp_path / "rgb.png").axes == "YXC"


def test_calibration_words():
    assert Calibration(x=0.2, y=0.2, unit="\\u00B5m", z=1.0).describe() == "0.2 um/px, z 1.0 um"
    assert Calibration(x=0.1, y=0.2, unit="nm").zoomed(2).describe() == "0.1x0.05 nm/px"
    assert Calibration(t=30.0, t_unit="s").describe() == "t 30.0 s"


def test_a_tiff_with_no_image_in_it_says_so_and_nothing_else(tmp_path, capsys):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\0" + bytes(50))  # a TIFF header, then nothing
    with pytest.raises(InputError, match="a TIFF file with no image in it"):
        read_image(path)
    assert capsys.readouterr().err == ""  # tifffile's own warning is not printed beside it


def test_an_ome_tif_name_asks_for_an_ome_tiff_whatever_the_input(tmp_path):
    source = tmp_path / "in.tif"
    data = _ramp((2, 3, 32, 32))
    tifffile.imwrite(source, data, imagej=True, resolution=(5.0, 4.0),
                     metadata={"axes": "TZYX", "unit": "micron", "spacing": 0.75, "finterval": 2.0, "tunit": "sec"})
    image = read_image(source)
    out = write_image(tmp_path / "out.ome.tif", image, PROVENANCE)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and not tif.is_imagej and tif.series[0].axes == "TZYX"
        # OME's spellings of ImageJ's micron and sec
        assert 'PhysicalSizeXUnit="µm"' in tif.ome_metadata and 'TimeIncrementUnit="s"' in tif.ome_metadata
        np.testing.assert_array_equal(tif.asarray(), data)
    again = read_image(out)
    assert again.kind == "ome" and read_provenance(out) == PROVENANCE
    c = again.calibration
    assert (c.x, c.y, c.z, c.t) == pytest.approx((0.2, 0.25, 0.75, 2.0))
    # Without .ome in the name the input's kind is kept.
    with tifffile.TiffFile(write_image(tmp_path / "out.tif", image)) as tif:
        assert tif.is_imagej and not tif.is_ome


@pytest.mark.parametrize("name", ["empty.png", "empty.tif"])
def test_an_empty_file_is_called_empty(name, tmp_path):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError, match=f"{name}: the file is empty"):
        read_image(tmp_path / name)


def test_a_folder_inside_an_ome_zarr_points_at_the_image(tmp_path):
    level = tmp_path / "cells.ome.zarr" / "0"
    level.mkdir(parents=True)
    with pytest.raises(InputError, match=r"is a folder; .*for the OME-Zarr image, name .*cells\.ome\.zarr$"):
        read_image(level)
