"""napari-dip: Deep Image Prior restoration (denoising, super-resolution, inpainting).

The numpy API is importable from here; torch is imported only when it is first used, so
that importing the package (as napari does for its widgets) stays fast.

>>> import napari_dip
>>> napari_dip.denoise  # doctest: +ELLIPSIS
<function denoise at ...>
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-dip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_LAZY = {
    "denoise": "restore",
    "super_resolve": "restore",
    "inpaint": "restore",
    "iter_restore": "restore",
    "iter_restore_planes": "restore",
    "iter_restore_volumes": "volumes",
    "Snapshot": "engine.fit",
    "FitConfig": "engine.fit",
    "SkipNetConfig": "engine.networks",
    "VolumeNetConfig": "engine.networks3d",
    "InputError": "errors",
    "ConstantImageError": "errors",
    "InputWarning": "errors",
    "InvertedMaskWarning": "errors",
    "DeviceMemoryError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    # The lazy names too, so that dir() and tab completion list the API before first use.
    return sorted({*globals(), *_LAZY})
