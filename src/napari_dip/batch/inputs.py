"""Which files a batch restores, where each result goes, and which mask goes with it.

Inputs are files, folders (their TIFF and PNG files and OME-Zarr folders, not
recursively, hidden files left out) and glob patterns (``**`` recurses). An OME-Zarr input
(``cells.ome.zarr``, a folder) is one image; its result is an OME-TIFF (``cells.ome.tif``).
For inpainting, ``mask_pattern`` names each input's mask relative to the input's folder,
``{stem}`` standing for the input's name without its suffix (``'{stem}_mask.png'``,
``'masks/{stem}.tif'``); a pattern without ``{stem}`` is one mask for every input. Files a
pattern names as masks are never inputs.

No file is read here: a missing mask or an unreadable image becomes a failed row of the
report, not an error that stops the batch.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import SUFFIXES
from ..ome_zarr import is_ome_zarr

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class Item:
    """One input of a batch: the file, its mask (inpainting), where its result and the
    result's record (the JSON sidecar) are written, and why it cannot be done, if known."""

    input: Path
    output: Path
    mask: Path | None = None
    problem: str | None = None

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.output)


def sidecar_path(output: Path) -> Path:
    """``out/cells.tif`` -> ``out/cells.tif.json``."""
    return output.with_name(output.name + ".json")


def _is_image(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if is_ome_zarr(path):
        return path.is_dir()
    return path.is_file() and path.suffix.lower() in SUFFIXES


def output_name(path: Path) -> str:
    """The file name of ``path``'s result: the input's own, except that an OME-Zarr image
    (read, not written) becomes an OME-TIFF.

    >>> output_name(Path("a/cells.png")), output_name(Path("a/cells.ome.zarr")), output_name(Path("b.zarr"))
    ('cells.png', 'cells.ome.tif', 'b.ome.tif')
    """
    if not is_ome_zarr(path):
        return path.name
    stem = path.name[: -len(".zarr")]
    return (stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem) + ".ome.tif"


def expand_inputs(inputs) -> list[Path]:
    """Files, folders and glob patterns -> the files, in order, each once.

    A file named explicitly is kept whatever its type (it fails, and is reported, when it
    is read); a folder or pattern contributes only TIFF and PNG files and OME-Zarr
    folders. A folder or pattern that holds no image, or a path that does not exist, is an :class:`InputError`: a typo
    would otherwise make an empty batch that looks done.
    """
    found: list[Path] = []
    for entry in inputs:
        text = str(entry)
        path = Path(text)
        if any(character in text for character in GLOB_CHARACTERS) and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            images = [m for m in matches if _is_image(m)]
            if not images:
                raise InputError(f"{text} matches no TIFF, PNG or OME-Zarr image")
            found.extend(images)
        elif path.is_dir() and not is_ome_zarr(path):
            images = sorted(p for p in path.iterdir() if _is_image(p))
            if not images:
                raise InputError(f"{path} holds no TIFF, PNG or OME-Zarr image")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    unique, seen = [], set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def mask_for(image: Path, pattern: str) -> Path:
    """The mask ``pattern`` names for ``image``.

    >>> mask_for(Path("data/cell1.png"), "{stem}_mask.png").as_posix()
    'data/cell1_mask.png'
    >>> mask_for(Path("data/cell1.tif"), "masks/{stem}.tif").as_posix()
    'data/masks/cell1.tif'
    >>> mask_for(Path("data/cell1.tif"), "/shared/holes.png").as_posix()
    '/shared/holes.png'
    """
    try:
        name = pattern.format(stem=image.stem, name=image.name, suffix=image.suffix)
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(f"--mask-pattern {pattern!r}: use {{stem}} for the image's name without its suffix "
                         f"({error})") from None
    mask = Path(name)
    return mask if mask.is_absolute() else image.parent / mask


def _mask_name_regex(pattern: str) -> re.Pattern | None:
    """A regex for the file names ``pattern`` gives masks (its last part), or ``None``.

    >>> bool(_mask_name_regex("{stem}_mask.png").fullmatch("cell1_mask.png"))
    True
    >>> bool(_mask_name_regex("{stem}_mask.png").fullmatch("cell1.png"))
    False
    """
    last = Path(pattern).name
    if "{stem}" not in last:
        return None
    parts = [re.escape(part) for part in last.split("{stem}")]
    return re.compile("(.+)".join(parts))


def plan_items(inputs, out: Path, task: str, mask_pattern: str | None = None) -> list[Item]:
    """The batch's items: each input with its output in ``out`` (same file name) and, for
    inpainting, its mask. Refused before anything runs (:class:`InputError`): inpainting
    without a mask pattern, two inputs of the same name (their results would collide), an
    output that would be an input itself."""
    if task == "inpaint" and not mask_pattern:
        raise InputError("inpainting needs --mask-pattern, e.g. '{stem}_mask.png' (the mask of cell1.png is "
                         "cell1_mask.png in the same folder)")
    files = expand_inputs(inputs)
    if task == "inpaint":
        masks = {mask_for(path, mask_pattern).resolve() for path in files}
        regex = _mask_name_regex(mask_pattern)
        files = [p for p in files if p.resolve() not in masks and not (regex and regex.fullmatch(p.name))]
        if not files:
            raise InputError(f"every input is a mask by --mask-pattern {mask_pattern!r}; nothing to inpaint")
    out = Path(out)
    items, names = [], {}
    for path in files:
        output = out / output_name(path)
        if output.resolve() == path.resolve():
            raise InputError(f"{path} would be replaced by its own result: choose an output folder other than "
                             f"the input's")
        if output.name in names:
            raise InputError(f"{names[output.name]} and {path} have the same name for their results "
                             f"({output.name}), so they would overwrite each other in the output folder; "
                             "restore them in two batches")
        names[output.name] = path
        mask, problem = None, None
        if task == "inpaint":
            mask = mask_for(path, mask_pattern)
            if not mask.is_file():
                problem = f"no mask: expected {mask}"
        items.append(Item(input=path, output=output, mask=mask, problem=problem))
    return items
