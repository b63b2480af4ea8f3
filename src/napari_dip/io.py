"""Reading and writing the image files the command line handles: TIFF and PNG.

TIFF keeps 16-bit and float data as they are and carries the pixel size (resolution
tags) and, in the image description, how a result was made. PNG holds 8-bit images and
16-bit grey images; the settings go into a text chunk.

A destination is checked before a fit (:func:`check_writable` writes and deletes a file in
its folder), and a result that still cannot be written afterwards is saved to the
temporary folder instead of being lost (:func:`write_image_or_rescue`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES
#: Key of the PNG text chunk / TIFF description entry that records how a result was made.
PROVENANCE_KEY = "napari-dip"


@dataclass
class ImageFile:
    """Pixels and the metadata that must survive a restoration."""

    data: np.ndarray
    #: Pixels per unit along (y, x) from the TIFF resolution tags, or ``None``.
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    extra: dict = field(default_factory=dict)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUFFIXES)}")
    return suffix


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read a TIFF or PNG file, keeping its dtype and, for TIFF, its pixel size."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path)
        import imageio.v3 as iio

        return ImageFile(np.asarray(iio.imread(path)))
    except InputError:
        raise
    except Exception as error:  # a corrupt or truncated file: say which and why, in one line
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: cannot be read as an image ({reason})") from error


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        tags = page.tags
        resolution = None
        unit = None
        if "XResolution" in tags and "YResolution" in tags:
            x_num, x_den = tags["XResolution"].value
            y_num, y_den = tags["YResolution"].value
            if x_den and y_den:
                resolution = (y_num / y_den, x_num / x_den)
                unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
        extra = {}
        if tif.imagej_metadata:
            extra = {k: v for k, v in tif.imagej_metadata.items() if k in ("unit", "spacing")}
    return ImageFile(np.asarray(data), resolution, unit, extra)


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early, before a long fit, if ``path`` cannot or must not be written."""
    path = Path(path)
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

    The file is written next to its destination and renamed into place, so an
    interrupted run leaves no truncated output behind.
    """
    path = check_writable(path, overwrite)
    suffix = _suffix(path)
    data = np.asarray(image.data)
    if suffix in PNG_SUFFIXES:
        check_png(path, data)
    partial = path.with_name(f".{path.stem}.partial{suffix}")
    try:
        if suffix in TIFF_SUFFIXES:
            _write_tiff(partial, image, provenance)
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
    if data.ndim == 3 and not colour:
        raise InputError(f"{path}: PNG cannot hold an image of shape {data.shape}; write a .tif instead")
    if colour and data.dtype == np.uint16:
        raise InputError(f"{path}: 16-bit colour cannot be written as PNG here; write a .tif instead")


def _write_png(path: Path, data: np.ndarray, provenance: dict | None) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if provenance:
        info.add_text(PROVENANCE_KEY, json.dumps(provenance, default=str))
    picture = Image.fromarray(data.astype("<u2") if data.dtype == np.uint16 else data)
    picture.save(path, format="PNG", pnginfo=info)


def _write_tiff(path: Path, image: ImageFile, provenance: dict | None) -> None:
    import tifffile

    data = np.asarray(image.data)
    photometric = "rgb" if data.ndim == 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8 else "minisblack"
    kwargs = {}
    if image.resolution is not None:
        kwargs["resolution"] = (image.resolution[1], image.resolution[0])
        if image.resolution_unit is not None:
            kwargs["resolutionunit"] = image.resolution_unit
    metadata = {**image.extra}
    if provenance:
        metadata[PROVENANCE_KEY] = json.dumps(provenance, default=str)
    extrasamples = ("unassalpha",) if photometric == "rgb" and data.shape[-1] == 4 else None
    tifffile.imwrite(
        path, data, photometric=photometric, metadata=metadata, extrasamples=extrasamples, **kwargs
    )


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
            text = (tif.shaped_metadata or [{}])[0].get(PROVENANCE_KEY)
    return json.loads(text) if text else None
