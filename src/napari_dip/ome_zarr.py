"""Reading OME-Zarr images (OME-NGFF 0.1-0.5): level 0 of the first multiscale image,
with its axes and pixel sizes, as an :class:`~napari_dip.io.ImageFile`.

An OME-Zarr image is a folder (``cells.ome.zarr``): a Zarr group whose attributes
(``multiscales``, under ``ome`` from version 0.5 on) list the resolution levels (each a Zarr
array), the axes (names ``t``, ``c``, ``z``, ``y``, ``x``, with units) and each level's
``scale`` transformation, i.e. the physical size of a pixel along each axis. Only the full
resolution (the first dataset) is read. Axes of length 1 other than Y and X are dropped, as
tifffile does for ImageJ hyperstacks, so a ``(1, 1, 1, 256, 256)`` image is a ``YX`` plane.
Axes with other names make ``axes`` unknown (``--axes`` then says what they are).

napari-dip reads OME-Zarr but writes TIFF: a result is an OME-TIFF with the same axes and
calibration. Reading needs the ``zarr`` package (``pip install 'napari-dip[zarr]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

#: The suffix of an OME-Zarr folder (``.zarr``, including ``.ome.zarr``).
ZARR_SUFFIX = ".zarr"
#: OME-NGFF units (UDUNITS-2 names) as OME-TIFF writes them; others are kept as written.
_UNIT_SYMBOLS = {
    "angstrom": "Å", "nanometer": "nm", "micrometer": "µm", "millimeter": "mm", "centimeter": "cm",
    "meter": "m", "nanosecond": "ns", "microsecond": "µs", "millisecond": "ms", "second": "s",
    "minute": "min", "hour": "h",
}
#: Version 0.1 and 0.2 images have no axes metadata: they are always 5D, in this order.
_OLD_AXES = ["t", "c", "z", "y", "x"]


def is_ome_zarr(path: str | Path) -> bool:
    """Whether ``path`` names a Zarr folder by its suffix (``.zarr``, ``.ome.zarr``)."""
    return Path(path).suffix.lower() == ZARR_SUFFIX


def _open_group(path: Path):
    try:
        import zarr
    except ImportError:
        raise InputError(f"{path}: reading OME-Zarr needs the zarr package: pip install 'napari-dip[zarr]' "
                         "(or pip install zarr)") from None
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as error:  # noqa: BLE001 - not a Zarr group at all: say so in one line
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: not a Zarr image ({reason})") from error


def _ome_attributes(attributes: dict) -> dict:
    return attributes.get("ome") if isinstance(attributes.get("ome"), dict) else attributes  # 0.5 nests them


def _channel_names(attributes: dict, count: int) -> list[str] | None:
    """The channels' labels from the ``omero`` rendering metadata, if there is one per channel."""
    omero = _ome_attributes(attributes).get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list) or len(channels) != count:
        return None
    names = [channel.get("label") if isinstance(channel, dict) else None for channel in channels]
    return names if all(isinstance(name, str) and name for name in names) else None


def _multiscale(path: Path, attributes: dict) -> dict:
    ome = _ome_attributes(attributes)
    multiscales = ome.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise InputError(f"{path}: a Zarr group without OME-Zarr 'multiscales' metadata; napari-dip reads "
                         "OME-Zarr images (a plate or a bare Zarr array is not one)")
    multiscale = multiscales[0]
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets or "path" not in datasets[0]:
        raise InputError(f"{path}: the OME-Zarr metadata lists no dataset")
    return multiscale


def _axes(multiscale: dict, ndim: int) -> tuple[list[str], list[str | None]]:
    """The axes' names (lower case) and units; version 0.3 gives names only, 0.1-0.2 nothing."""
    axes = multiscale.get("axes", _OLD_AXES if ndim == 5 else None)
    if not isinstance(axes, list) or len(axes) != ndim:
        return [], []
    names, units = [], []
    for axis in axes:
        name = axis.get("name") if isinstance(axis, dict) else axis
        unit = axis.get("unit") if isinstance(axis, dict) else None
        names.append(str(name).lower())
        units.append(_UNIT_SYMBOLS.get(str(unit).lower(), str(unit)) if unit else None)
    return names, units


def _scale(transformations) -> list[float] | None:
    for transformation in transformations or []:
        if isinstance(transformation, dict) and transformation.get("type") == "scale":
            scale = transformation.get("scale")
            if isinstance(scale, list):
                return [float(value) for value in scale]
    return None


def _level0_scale(multiscale: dict, ndim: int) -> list[float | None]:
    """The pixel size along each axis at full resolution: the first dataset's scale times
    the scale that applies to every dataset (version 0.4 allows one); ``None`` if unknown."""
    scale = _scale(multiscale["datasets"][0].get("coordinateTransformations"))
    shared = _scale(multiscale.get("coordinateTransformations"))
    if scale is None or len(scale) != ndim:
        return [None] * ndim
    if shared is not None and len(shared) == ndim:
        scale = [a * b for a, b in zip(scale, shared)]
    return [value if np.isfinite(value) and value > 0 else None for value in scale]


def read_ome_zarr(path: str | Path):
    """Level 0 of the OME-Zarr image at ``path``, with its axes and calibration."""
    from .io import Calibration, ImageFile, project_axes

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such OME-Zarr folder")
    group = _open_group(path)
    attributes = dict(group.attrs)
    multiscale = _multiscale(path, attributes)
    level = multiscale["datasets"][0]["path"]
    try:
        data = np.asarray(group[level][...])
    except Exception as error:  # noqa: BLE001 - a missing or corrupt chunk store: which and why
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path}: cannot read its level {level!r} ({reason})") from error
    names, units = _axes(multiscale, data.ndim)
    scale = _level0_scale(multiscale, data.ndim)
    if not names:
        return ImageFile(data, axes=None, file_axes="", kind="ome-zarr")
    keep = [i for i, name in enumerate(names) if name in ("y", "x") or data.shape[i] != 1]
    data = data.reshape([data.shape[i] for i in keep])
    names, units, scale = [names[i] for i in keep], [units[i] for i in keep], [scale[i] for i in keep]
    letters = "".join(name.upper() if len(name) == 1 else "?" for name in names)
    axes = project_axes(letters) if "S" not in letters else None

    def size(name):
        return (scale[names.index(name)], units[names.index(name)]) if name in names else (None, None)

    (x, unit), (y, _), (z, z_unit), (t, t_unit) = size("x"), size("y"), size("z"), size("t")
    if x is None or y is None:
        x = y = unit = None
    calibration = Calibration(x=x, y=y, unit=unit, z=z, z_unit=z_unit if z is not None else None,
                              t=t, t_unit=t_unit if t is not None else None)
    extra = {"Name": str(multiscale["name"])} if multiscale.get("name") else {}
    channel_names = _channel_names(attributes, data.shape[names.index("c")]) if "c" in names else None
    if channel_names:
        extra["ChannelNames"] = channel_names
    return ImageFile(data, axes=axes, file_axes="", kind="ome-zarr", calibration=calibration, extra=extra)
