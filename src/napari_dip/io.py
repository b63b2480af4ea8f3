"""Reading and writing the image files the command line handles: TIFF and PNG, and
OME-Zarr images read only (:mod:`napari_dip.ome_zarr`; their results are OME-TIFF).

A file is read with what a microscope recorded about it (:class:`ImageFile`): its axes,
the physical size of a pixel, the Z step and the time between frames, and which kind of
TIFF it was. A result is written back the same way: an ImageJ hyperstack stays an ImageJ
hyperstack (Fiji sees the calibration), an OME-TIFF stays an OME-TIFF, a plain TIFF keeps
its resolution tags. TIFF keeps 16-bit and float data as they are; PNG holds 8-bit images
and 16-bit grey images.

How a result was made (the provenance) is stored in the file and read back by
:func:`read_provenance`: in a PNG text chunk, in an ImageJ image property (IJMetadata tag,
shown by Fiji's *Image > Show Info*), in an OME map annotation, or in a plain TIFF's JSON
description, each under the key ``napari-dip``.

A destination is checked before a fit (:func:`check_writable` writes and deletes a file in
its folder), and a result that still cannot be written afterwards is saved to the
temporary folder instead of being lost (:func:`write_image_or_rescue`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES
#: Key of the PNG text chunk / TIFF metadata entry that records how a result was made.
PROVENANCE_KEY = "napari-dip"
#: The axis letters of the API: time, depth, channels, and the image plane.
AXES_LETTERS = "TZCYX"
#: The kinds of file, as :attr:`ImageFile.kind` names them, and as a person reads them.
KIND_NAMES = {"imagej": "ImageJ", "ome": "OME-TIFF", "tiff": "TIFF", "png": "PNG", "ome-zarr": "OME-Zarr"}
#: The dtypes an ImageJ hyperstack holds.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
#: ImageJ metadata carried from the input to the result besides the calibration: display
#: settings, value calibration, slice labels, the microscope's Info text, image properties.
_IMAGEJ_CARRIED = ("mode", "loop", "fps", "min", "max", "cf", "c0", "c1", "vunit", "yunit", "zunit",
                   "xorigin", "yorigin", "zorigin", "Info", "Labels", "Ranges", "LUTs", "Properties")
# TIFF ResolutionUnit values
_NO_UNIT, _INCH, _CENTIMETER = 1, 2, 3
_MICRONS = {"um", "µm", "μm", "\\u00B5m", "\\u00b5m", "micron", "microns", "micrometer", "micrometre"}


@dataclass(frozen=True)
class Calibration:
    """What one pixel measures, as the file recorded it; ``None`` where it did not say.

    ``x`` and ``y`` are the pixel width and height in ``unit``, ``z`` the distance between
    Z planes in ``z_unit``, ``t`` the time between frames in ``t_unit``.
    """

    x: float | None = None
    y: float | None = None
    unit: str | None = None
    z: float | None = None
    z_unit: str | None = None
    t: float | None = None
    t_unit: str | None = None

    def zoomed(self, factor: float) -> Calibration:
        """The calibration of the image ``factor`` times larger in Y and X (super-resolved):
        smaller pixels, the same Z step and time interval.

        >>> Calibration(x=0.2, y=0.2, unit="um", z=1.0).zoomed(2)
        Calibration(x=0.1, y=0.1, unit='um', z=1.0, z_unit=None, t=None, t_unit=None)
        """
        return replace(
            self,
            x=None if self.x is None else self.x / factor,
            y=None if self.y is None else self.y / factor,
        )

    def describe(self) -> str:
        """A few words for a person, empty when nothing is known.

        >>> Calibration(x=0.2, y=0.2, unit="micron", z=1.0, t=2.5, t_unit="s").describe()
        '0.2 um/px, z 1.0 um, t 2.5 s'
        >>> Calibration(x=0.2, y=0.25, unit="um").describe(), Calibration().describe()
        ('0.25x0.2 um/px', '')
        """
        parts = []
        unit = _short_unit(self.unit)
        if self.x is not None and self.y is not None:
            size = _number_text(self.x) if _close(self.x, self.y) else f"{_number_text(self.y)}x{_number_text(self.x)}"
            parts.append(f"{size} {unit}/px" if unit else f"{size} px size")
        if self.z is not None:
            parts.append(f"z {_number_text(self.z)} {_short_unit(self.z_unit or self.unit)}".rstrip())
        if self.t is not None:
            parts.append(f"t {_number_text(self.t)} {_short_unit(self.t_unit)}".rstrip())
        return ", ".join(parts)


def _short_unit(unit: str | None) -> str:
    if not unit:
        return ""
    return "um" if unit.strip() in _MICRONS else unit.strip()


#: ImageJ's spellings of units that OME spells otherwise (OME's lists of length and time units).
_OME_UNITS = {"nanometer": "nm", "nanometre": "nm", "millimeter": "mm", "millimetre": "mm",
              "meter": "m", "metre": "m", "inch": "in", "inches": "in", "angstrom": "Å",
              "sec": "s", "second": "s", "seconds": "s", "msec": "ms", "millisecond": "ms", "milliseconds": "ms",
              "minute": "min", "minutes": "min", "hour": "h", "hours": "h", "hr": "h"}


def _ome_unit(unit: str) -> str:
    """OME's spelling of a unit: ImageJ writes ``micron``, ``sec`` or ``inch``, which OME
    readers do not know (they take ``µm``, ``s`` and ``in``).

    >>> _ome_unit("micron"), _ome_unit("sec"), _ome_unit("inch"), _ome_unit("nm")
    ('µm', 's', 'in', 'nm')
    """
    unit = unit.strip()
    return "µm" if unit in _MICRONS else _OME_UNITS.get(unit, unit)


def _number_text(value: float) -> str:
    """
    >>> _number_text(1.0), _number_text(0.2), _number_text(0.1 + 0.2), _number_text(1234567.0)
    ('1.0', '0.2', '0.3', '1.235e+06')
    """
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


@dataclass
class ImageFile:
    """Pixels and the metadata that must survive a restoration."""

    data: np.ndarray
    #: Pixels per unit along (y, x) from the TIFF resolution tags, or ``None``.
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    #: Format-specific metadata carried from the input to the result (ImageJ display
    #: settings and Info, OME image name and channel names).
    extra: dict = field(default_factory=dict)
    #: One letter of ``TZCYX`` per axis of ``data``, or ``None`` when the file does not say.
    axes: str | None = None
    #: The axes as tifffile read them (``"QYX"``, ``"ZYXS"``, ...); ``""`` for PNG.
    file_axes: str = ""
    #: ``"imagej"``, ``"ome"``, ``"tiff"`` (any other TIFF) or ``"png"``.
    kind: str = "tiff"
    calibration: Calibration = field(default_factory=Calibration)

    def zoomed(self, data: np.ndarray, factor: int | None) -> ImageFile:
        """This file's metadata around ``data``, the result of restoring it; after
        super-resolution by ``factor`` the pixels are ``factor`` times smaller in Y and X
        (the resolution tags count ``factor`` times more pixels per unit)."""
        if not factor:
            return replace(self, data=data)
        resolution = self.resolution
        if resolution is not None:
            resolution = (resolution[0] * factor, resolution[1] * factor)
        extra = dict(self.extra)
        for key in ("xorigin", "yorigin"):  # ImageJ origins are in pixels
            if isinstance(extra.get(key), (int, float)):
                extra[key] = extra[key] * factor
        return replace(self, data=data, resolution=resolution, extra=extra,
                       calibration=self.calibration.zoomed(factor))

    def describe(self) -> str:
        """The file's kind and calibration for a person: ``ImageJ, 0.2 um/px, z 1.0 um``."""
        calibration = self.calibration.describe()
        if not calibration and self.kind == "tiff" and self.resolution is not None:
            calibration = _describe_resolution_tags(self.resolution, self.resolution_unit)
        return ", ".join(p for p in (KIND_NAMES.get(self.kind, self.kind), calibration) if p)


def _describe_resolution_tags(resolution: tuple[float, float], unit: int | None) -> str:
    """Plain TIFF resolution tags in words; nothing for tifffile's default 1 pixel per no unit.

    >>> _describe_resolution_tags((5000.0, 5000.0), 3), _describe_resolution_tags((300.0, 300.0), 2)
    ('2.0 um/px', '300 dpi')
    >>> _describe_resolution_tags((1.0, 1.0), 1)
    ''
    """
    y, x = resolution
    if not (x > 0 and y > 0) or unit == _NO_UNIT or unit is None:
        return ""
    if unit == _CENTIMETER:
        if _close(x, y):
            return f"{_number_text(1e4 / x)} um/px"
        return f"{_number_text(1e4 / y)}x{_number_text(1e4 / x)} um/px"
    if unit == _INCH:
        return f"{x:.4g} dpi" if _close(x, y) else f"{y:.4g}x{x:.4g} dpi"
    return ""


def project_axes(file_axes: str) -> str | None:
    """tifffile's axis letters in the API's (``TZCYX``), or ``None`` when they do not say
    what an axis is (``Q``, ``I``, or a letter of another kind such as angle or phase).

    ``S``, the colour samples of one pixel, is a channel axis at the end.

    >>> project_axes("TZCYX"), project_axes("YXS"), project_axes("ZYXS"), project_axes("YX")
    ('TZCYX', 'YXC', 'ZYXC', 'YX')
    >>> project_axes("QYX"), project_axes("IYX"), project_axes("CYXS"), project_axes("ZQ")
    (None, None, None, None)
    """
    letters = []
    for position, letter in enumerate(file_axes):
        if letter in AXES_LETTERS:
            letters.append(letter)
        elif letter == "S" and position == len(file_axes) - 1:
            letters.append("C")
        else:
            return None
    axes = "".join(letters)
    if len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
        return None
    return axes


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES and path.is_dir():
        inside = next((parent for parent in path.parents if parent.suffix.lower() == ".zarr"), None)
        hint = f"; for the OME-Zarr image, name {inside}" if inside is not None else ""
        raise InputError(f"{path}: is a folder; name an image file ({', '.join(SUFFIXES)}){hint}")
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUFFIXES)}")
    return suffix


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read a TIFF or PNG file, keeping its dtype, axes and, for TIFF, its calibration, or
    an OME-Zarr folder (:mod:`napari_dip.ome_zarr`, needs the ``zarr`` package)."""
    path = Path(path)
    from .ome_zarr import is_ome_zarr, read_ome_zarr

    if is_ome_zarr(path):
        return read_ome_zarr(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:  # else each reader says it its own way (imageio: "no backend")
        raise InputError(f"{path}: the file is empty")
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path)
        import imageio.v3 as iio

        data = np.asarray(iio.imread(path))
        file_axes = "YX" if data.ndim == 2 else "YXS" if data.ndim == 3 else ""
        return ImageFile(data, axes=project_axes(file_axes), file_axes=file_axes, kind="png")
    except InputError:
        raise
    except Exception as error:  # a corrupt or truncated file: say which and why, in one line
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: cannot be read as an image ({reason})") from error


@contextmanager
def _tifffile_warnings_muted():
    """tifffile logs what it finds odd about a file as warnings, which Python prints bare
    to stderr; what stops a read is said in the error instead. Only this thread's records
    are muted: a read in another thread keeps its warnings."""
    log = logging.getLogger("tifffile")
    reader = threading.get_ident()

    def quiet(record: logging.LogRecord) -> bool:
        return record.thread != reader or record.levelno >= logging.ERROR

    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with _tifffile_warnings_muted(), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path}: a TIFF file with no image in it (damaged or cut short?)")
        series = tif.series[0]
        data = np.asarray(series.asarray())
        file_axes = series.axes
        tags = series.keyframe.tags
        resolution = None
        unit = None
        if "XResolution" in tags and "YResolution" in tags:
            x_num, x_den = tags["XResolution"].value
            y_num, y_den = tags["YResolution"].value
            if x_den and y_den:
                resolution = (y_num / y_den, x_num / x_den)
                unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
        if tif.is_imagej and tif.imagej_metadata is not None:
            kind = "imagej"
            calibration, extra = _imagej_calibration(tif.imagej_metadata, resolution)
        elif tif.is_ome and tif.ome_metadata:
            kind = "ome"
            calibration, extra = _ome_calibration(tif.ome_metadata)
        else:
            kind, calibration, extra = "tiff", Calibration(), {}
    if data.ndim != len(file_axes):  # not expected from tifffile; do not trust the letters then
        file_axes = ""
    return ImageFile(data, resolution, unit, extra, project_axes(file_axes), file_axes, kind, calibration)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _imagej_calibration(metadata: dict, resolution) -> tuple[Calibration, dict]:
    """ImageJ keeps the pixel width and height in the resolution tags (pixels per unit) and
    the unit, Z step (``spacing``) and frame interval (``finterval``, in ``tunit``, seconds
    by default) in the description."""
    unit = metadata.get("unit") or None
    if unit in ("pixel", "pixels"):
        unit = None
    x = y = None
    if unit and resolution is not None and resolution[0] > 0 and resolution[1] > 0:
        y, x = 1 / resolution[0], 1 / resolution[1]
    z = _number(metadata.get("spacing"))
    t = _number(metadata.get("finterval"))
    calibration = Calibration(
        x=x, y=y, unit=unit,
        z=z, z_unit=(metadata.get("zunit") or unit) if z is not None else None,
        t=t, t_unit=(metadata.get("tunit") or "s") if t is not None else None,
    )
    extra = {key: metadata[key] for key in _IMAGEJ_CARRIED if key in metadata}
    properties = extra.get("Properties")
    if isinstance(properties, dict) and PROVENANCE_KEY in properties:  # the input's own record
        extra["Properties"] = {k: v for k, v in properties.items() if k != PROVENANCE_KEY} or None
        if extra["Properties"] is None:
            del extra["Properties"]
    return calibration, extra


def _ome_image(ome_xml: str) -> dict:
    import tifffile

    image = tifffile.xml2dict(ome_xml).get("OME", {}).get("Image", {})
    if isinstance(image, list):
        image = image[0] if image else {}
    return image if isinstance(image, dict) else {}


def _ome_calibration(ome_xml: str) -> tuple[Calibration, dict]:
    """OME keeps ``PhysicalSizeX/Y/Z`` (micrometres unless their ``...Unit`` says otherwise)
    and ``TimeIncrement`` (seconds by default) on the first image's Pixels element."""
    image = _ome_image(ome_xml)
    pixels = image.get("Pixels", {}) if isinstance(image.get("Pixels"), dict) else {}

    def size(name, default_unit):
        value = _number(pixels.get(name))
        return value, (pixels.get(f"{name}Unit") or default_unit) if value is not None else None

    x, x_unit = size("PhysicalSizeX", "µm")
    y, _ = size("PhysicalSizeY", "µm")
    z, z_unit = size("PhysicalSizeZ", "µm")
    t, t_unit = size("TimeIncrement", "s")
    if x is None or y is None:
        x = y = x_unit = None
    calibration = Calibration(x=x, y=y, unit=x_unit, z=z, z_unit=z_unit, t=t, t_unit=t_unit)
    extra = {}
    if image.get("Name"):
        extra["Name"] = str(image["Name"])
    channels = pixels.get("Channel")
    channels = channels if isinstance(channels, list) else [channels] if isinstance(channels, dict) else []
    names = [c.get("Name") for c in channels if isinstance(c, dict)]
    if names and all(isinstance(n, str) and n for n in names):
        extra["ChannelNames"] = names
    return calibration, extra


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early, before a long fit, if ``path`` cannot or must not be written."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        raise InputError(f"{path}: napari-dip reads OME-Zarr but writes TIFF; name a .tif file (an OME-TIFF "
                         "keeps the axes and pixel sizes)")
    _suffix(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; name the file to write")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")
    check_folder_writable(path.parent)
    return path


def check_folder_writable(folder: str | os.PathLike) -> Path:
    """Fail if no file can be created in ``folder``.

    Permission bits do not tell (root ignores them; read-only mounts, ``/sys`` and network
    shares refuse what they allow): a file is actually created there and deleted again.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".napari-dip-check-", suffix=".tmp"):
            pass
    except OSError as error:
        raise InputError(f"cannot write to {folder} ({_reason(error)}); choose another output folder") from error
    return folder


def _reason(error: Exception) -> str:
    """The short cause of an error: ``Permission denied`` rather than the errno and path."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def write_image_or_rescue(
    path: str | os.PathLike,
    image: ImageFile,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """:func:`write_image`, but if that fails (the disk filled up, the folder went away
    during an hour-long fit) write the result to a new file in the temporary folder and
    raise an :class:`InputError` that names it: a result is never thrown away.
    """
    path = Path(path)
    try:
        return write_image(path, image, provenance, overwrite=overwrite)
    except (OSError, InputError) as error:
        reason = _reason(error) if isinstance(error, OSError) else str(error)
        try:
            rescue = write_rescue(path, image, provenance)
        except (OSError, InputError) as again:
            raise InputError(
                f"cannot write {path} ({reason}), nor a copy in {tempfile.gettempdir()} ({_reason(again)}): "
                "the result is lost"
            ) from error
        raise InputError(f"cannot write {path} ({reason}); the result was saved to {rescue}") from error


def write_rescue(path: str | os.PathLike, image: ImageFile, provenance: dict | None = None) -> Path:
    """Write ``image`` to a new file in :func:`tempfile.gettempdir`, named after ``path``
    and of the same type; return its path."""
    path = Path(path)
    suffix = _suffix(path)
    handle, name = tempfile.mkstemp(prefix=f"napari-dip-{path.stem}-", suffix=suffix)
    os.close(handle)
    try:
        return write_image(name, image, provenance, overwrite=True)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_image(
    path: str | os.PathLike,
    image: ImageFile,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``image`` to ``path`` (TIFF or PNG by suffix), never half-written.

    A TIFF is written as the kind of file ``image`` was read from (``image.kind``): ImageJ
    hyperstack, OME-TIFF or plain TIFF, with its axes and calibration; a name ending in
    ``.ome.tif`` or ``.ome.tiff`` asks for an OME-TIFF whatever the input. The file is written
    next to its destination and renamed into place, so an interrupted run leaves no
    truncated output behind.
    """
    path = check_writable(path, overwrite)
    suffix = _suffix(path)
    data = np.asarray(image.data)
    if suffix in PNG_SUFFIXES:
        check_png(path, data)
    partial = path.with_name(f".{path.stem}.partial{suffix}")
    try:
        if suffix in TIFF_SUFFIXES:
            _write_tiff(partial, image, provenance, "ome" if _names_ome(path) else image.kind)
        else:
            _write_png(partial, data, provenance)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def check_png(path: Path, data: np.ndarray) -> None:
    """Fail if ``data``'s dtype or layout cannot be stored as PNG."""
    if data.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: PNG holds 8- or 16-bit integers, not {data.dtype}; write a .tif instead")
    colour = data.ndim == 3 and data.shape[-1] in (3, 4)
    if data.ndim > 3 or (data.ndim == 3 and not colour):
        raise InputError(f"{path}: PNG cannot hold an image of shape {data.shape}; write a .tif instead")
    if colour and data.dtype == np.uint16:
        raise InputError(f"{path}: 16-bit colour cannot be written as PNG here; write a .tif instead")


def imagej_conversion(image: ImageFile, path: str | os.PathLike) -> str | None:
    """What writing ``image`` to ``path`` changes because ImageJ holds only uint8, uint16
    and float32, in words, or ``None`` when nothing changes."""
    if _suffix(Path(path)) not in TIFF_SUFFIXES or image.kind != "imagej" or _names_ome(Path(path)):
        return None
    dtype = np.asarray(image.data).dtype
    if dtype in IMAGEJ_DTYPES:
        return None
    return f"ImageJ holds uint8, uint16 or float32 pixels: the {dtype} result is written as float32"


def _write_png(path: Path, data: np.ndarray, provenance: dict | None) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if provenance:
        info.add_text(PROVENANCE_KEY, json.dumps(provenance, default=str))
    picture = Image.fromarray(data.astype("<u2") if data.dtype == np.uint16 else data)
    picture.save(path, format="PNG", pnginfo=info)


def _tiff_axes(image: ImageFile) -> tuple[np.ndarray, str | None, bool]:
    """``(data, tifffile axes, rgb)`` to write: the file's own letters when the axes are
    the ones read from it, else the API's with a last colour channel of 3 or 4 uint8
    values as RGB samples (``S``)."""
    data = np.asarray(image.data)
    axes = image.axes
    if axes is None or len(axes) != data.ndim:
        rgb = data.ndim == 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8
        return data, ("YXS" if rgb else None) if data.ndim == 3 else ("YX" if data.ndim == 2 else None), rgb
    if image.file_axes and project_axes(image.file_axes) == axes:
        letters = image.file_axes
    else:
        letters = axes
        if axes.endswith("C") and data.shape[-1] in (3, 4) and data.dtype == np.uint8:
            letters = axes[:-1] + "S"
    rgb = letters.endswith("S") and data.shape[-1] in (3, 4) and data.dtype == np.uint8
    if letters.endswith("S") and not rgb:
        letters = letters[:-1] + "C"
    return data, letters, rgb


def _imagej_layout(data: np.ndarray, letters: str, rgb: bool) -> tuple[np.ndarray, str, bool]:
    """Reorder ``data`` into ImageJ's axis order (``TZCYX``, RGB samples last); RGBA keeps
    only RGB in ImageJ, so four samples become a channel axis."""
    if rgb and data.shape[-1] != 3:
        letters, rgb = letters[:-1] + "C", False
    order = "TZCYXS"
    permutation = sorted(range(len(letters)), key=lambda i: order.index(letters[i]))
    return np.transpose(data, permutation), "".join(letters[i] for i in permutation), rgb


def _names_ome(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


def _write_tiff(path: Path, image: ImageFile, provenance: dict | None, kind: str) -> None:
    import tifffile

    data, letters, rgb = _tiff_axes(image)
    record = json.dumps(provenance, default=str) if provenance else None
    kwargs: dict = {}
    if image.resolution is not None:
        kwargs["resolution"] = (image.resolution[1], image.resolution[0])
        if image.resolution_unit is not None:
            kwargs["resolutionunit"] = image.resolution_unit
    extrasamples = ("unassalpha",) if rgb and data.shape[-1] == 4 else None
    photometric = "rgb" if rgb else "minisblack"
    if kind == "imagej" and letters is not None:
        data, letters, rgb = _imagej_layout(data, letters, rgb)
        if data.dtype not in IMAGEJ_DTYPES:
            data = data.astype(np.float32)  # imagej_conversion says so before the fit
        metadata = _imagej_metadata(image, letters, record)
        calibration = image.calibration
        if calibration.x is not None and calibration.y is not None:
            kwargs["resolution"] = (1 / calibration.x, 1 / calibration.y)
        kwargs.pop("resolutionunit", None)  # ImageJ's unit is in the description
        tifffile.imwrite(path, data, imagej=True, photometric="rgb" if rgb else "minisblack",
                         metadata=metadata, **kwargs)
    elif kind in ("ome", "ome-zarr") and letters is not None:  # an OME-Zarr's result: OME-TIFF
        metadata = _ome_metadata(image, letters, record)
        tifffile.imwrite(path, data, ome=True, photometric=photometric, extrasamples=extrasamples,
                         metadata=metadata, **kwargs)
    else:
        metadata = {} if letters is None else {"axes": letters}
        if record:
            metadata[PROVENANCE_KEY] = record
        tifffile.imwrite(path, data, photometric=photometric, metadata=metadata, extrasamples=extrasamples,
                         **kwargs)


def _imagej_metadata(image: ImageFile, letters: str, record: str | None) -> dict:
    calibration = image.calibration
    metadata = {key: value for key, value in image.extra.items() if key in _IMAGEJ_CARRIED}
    metadata["axes"] = letters
    if calibration.unit:
        metadata["unit"] = calibration.unit
    if calibration.z is not None:
        metadata["spacing"] = calibration.z
    if calibration.t is not None:
        metadata["finterval"] = calibration.t
        if calibration.t_unit and calibration.t_unit not in ("s", "sec"):
            metadata["tunit"] = calibration.t_unit
    if "C" in letters and "mode" not in metadata:
        metadata["mode"] = "composite"
    properties = dict(metadata.get("Properties") or {})
    if record:
        properties[PROVENANCE_KEY] = record
    if properties:
        metadata["Properties"] = properties
    return metadata


def _ome_metadata(image: ImageFile, letters: str, record: str | None) -> dict:
    calibration = image.calibration
    metadata: dict = {"axes": letters}
    if "Name" in image.extra:
        metadata["Name"] = image.extra["Name"]
    if calibration.x is not None and calibration.y is not None:
        metadata.update(PhysicalSizeX=calibration.x, PhysicalSizeY=calibration.y)
        if calibration.unit:
            unit = _ome_unit(calibration.unit)
            metadata.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    if calibration.z is not None:
        metadata["PhysicalSizeZ"] = calibration.z
        if calibration.z_unit:
            metadata["PhysicalSizeZUnit"] = _ome_unit(calibration.z_unit)
    if calibration.t is not None:
        metadata["TimeIncrement"] = calibration.t
        if calibration.t_unit:
            metadata["TimeIncrementUnit"] = _ome_unit(calibration.t_unit)
    names = image.extra.get("ChannelNames")
    channels = image.data.shape[letters.index("C")] if "C" in letters else 1
    if names and len(names) == channels:
        metadata["Channel"] = {"Name": list(names)}
    if record:
        metadata["MapAnnotation"] = {PROVENANCE_KEY: record}
    return metadata


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The settings a napari-dip output was made with, or ``None`` if it holds none."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in PNG_SUFFIXES:
        from PIL import Image

        with Image.open(path) as picture:
            text = picture.info.get(PROVENANCE_KEY)
    else:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = None
            if tif.is_imagej:
                properties = (tif.imagej_metadata or {}).get("Properties")
                if isinstance(properties, dict):
                    text = properties.get(PROVENANCE_KEY)
            if text is None and tif.is_ome and tif.ome_metadata:
                text = _ome_annotation(tifffile.xml2dict(tif.ome_metadata), PROVENANCE_KEY)
            if text is None:
                text = ((tif.shaped_metadata or [{}])[0] or {}).get(PROVENANCE_KEY)
    return json.loads(text) if text else None


def _ome_annotation(tree, key: str) -> str | None:
    """The value of ``key`` in the first OME map annotation that holds it."""
    if isinstance(tree, list):
        for item in tree:
            found = _ome_annotation(item, key)
            if found is not None:
                return found
    elif isinstance(tree, dict):
        if tree.get("K") == key and "value" in tree:
            return str(tree["value"])
        for value in tree.values():
            found = _ome_annotation(value, key)
            if found is not None:
                return found
    return None
