"""The record written next to each result (``cells.tif.json``), and the atomic writes.

A result counts as done when its record exists, names the same input content (SHA-256)
and the same settings (the options asked for, and the defaults those options meant on the
device asked for in the release that made it: a result made with other defaults is redone),
and the result file it names is there with the content it names.
The record is written after the result, so an interrupted batch leaves either nothing,
or a result without a record (redone next time), never a record of a missing result.
Both are written under a temporary name in the output folder and renamed into place
(``os.replace``, atomic on one file system): no reader ever sees half a file, and a task
that Dask runs twice (its worker died after writing) only replaces a file by an equal one.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

#: Temporary files of a batch start with this; they are removed when a batch ends.
PARTIAL_PREFIX = ".napari-dip-partial-"
#: Options that say where things are or how the batch is shown, not how a result is made.
NOT_SETTINGS = frozenset({
    "command", "func", "inputs", "input", "out", "output", "overwrite", "force", "quiet", "progress_every",
    "scheduler", "workers", "mask_pattern", "mask",
})

#: Options that only one task uses: the batch command takes them whatever the task (with
#: their defaults), and a change of one must not redo the other tasks' results.
TASK_ONLY = {"factor": "super-resolve", "mask_known": "inpaint", "raw_output": "inpaint",
             # The noise model and recorruption: other tasks fit Gaussian noise the paper's way.
             "noise": "denoise", "noise_fit": "denoise", "gain": "denoise", "offset": "denoise",
             "recorrupt": "denoise"}


def _used_by(task: str, settings: dict) -> dict:
    return {key: value for key, value in settings.items() if TASK_ONLY.get(key, task) == task}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file; of a folder (an OME-Zarr image), over its files' relative paths
    and contents in sorted order, so a changed, added or removed chunk changes it."""
    digest = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(member.relative_to(path).as_posix().encode() + b"\0")
            digest.update(file_sha256(member, chunk).encode())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Named constants that decide what a result is and that no option sets, beyond the
#: preset's defaults (``defaults``, which knows which defaults a device's preset uses), by
#: module. A release that changes one redoes a resumed batch's results; constants that
#: only change how fast a fit runs, what it shows, or which choices exist are left out.
RESULT_CONSTANTS = {
    # How an input is scaled into [0, 1].
    "napari_dip.arrays": ("RANGE_PERCENTILES", "HEADROOM", "PERCENTILE_SAMPLES"),
    "napari_dip.engine.fit": ("MAX_CONSECUTIVE_BACKTRACKS",),
    # The held-out rule's block for correlated noise.
    "napari_dip.engine.stopping": ("CORRELATED_NOISE", "CORRELATED_NOISE_BLOCK"),
    # Which images are tiled, in which tiles, blended how.
    "napari_dip.engine.tiling": ("AUTO_TILE_SIZES", "WHOLE_IMAGE_SHARE", "TILE_SHARE", "MIN_TILE_SIZE",
                                 "EDGE_SHARE", "EDGE_WEIGHT"),
}
#: The same for one task only: the noise estimate and the noise model are denoising's.
TASK_CONSTANTS = {
    "denoise": {
        "napari_dip.noise": ("AUTO_VARIANCE_RATIO", "AUTO_SLOPE_SIGNIFICANCE", "BRIGHT_QUANTILE",
                             "SMOOTHEST_FRACTION", "MAX_CLIPPED_FRACTION", "CLIP_MIN_FRACTION", "FEW_BINS",
                             "CLIP_PILE_UP", "_MAD_TO_SIGMA", "_GAT_FLOOR"),
        "napari_dip.noise_model": ("DEFAULT_NOISE_FIT",),
        "napari_dip.restore": ("NOISE_SAMPLE_PLANES", "NOISE_SAMPLE_PIXELS", "_NORMAL_MEDIAN_ABSOLUTE"),
    },
}
#: And for 3D restoration (``volumetric``) only: where the network downsamples.
VOLUME_CONSTANTS = {"napari_dip.engine.networks3d": ("ANISOTROPY_RATIO",)}


def rule_constants(task: str, volumetric: bool = False) -> dict:
    """The values of the constants that decide a result of ``task`` (:data:`RESULT_CONSTANTS`,
    :data:`TASK_CONSTANTS`, and :data:`VOLUME_CONSTANTS` for a 3D restoration), by
    ``module.NAME``.

    >>> constants = rule_constants("denoise")
    >>> constants["napari_dip.noise.AUTO_VARIANCE_RATIO"] > 1, "napari_dip.noise.FEW_BINS" in rule_constants("inpaint")
    (True, False)
    """
    import importlib

    registries = [RESULT_CONSTANTS, TASK_CONSTANTS.get(task, {})]
    if volumetric:
        registries.append(VOLUME_CONSTANTS)
    constants = {}
    for registry in registries:
        for module_name, names in registry.items():
            module = importlib.import_module(module_name)
            for name in names:
                constants[f"{module_name}.{name}"] = getattr(module, name)  # a renamed one fails loudly
    return constants


def rules_fingerprint(task: str, volumetric: bool = False) -> str:
    """A short hash of :func:`rule_constants`: a batch resumed after a release that changed
    one (the noise model's thresholds, the tiles' edge weights, ...) redoes its results."""
    text = json.dumps(rule_constants(task, volumetric), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def settings_of(task: str, options: dict) -> dict:
    """The options that decide a result of ``task``, as JSON values (compared on resume;
    another task's options, such as super-resolution's factor, are left out), and under
    ``defaults`` a fingerprint of the defaults the preset fits with on the device asked for
    (:func:`~napari_dip.engine.presets.defaults_fingerprint`): the same options make
    another result when a release changes a default; and under ``rules`` one of the
    constants beyond the preset (:func:`rules_fingerprint`).

    >>> settings = settings_of("denoise", {"iterations": 100, "out": "x", "seed": 0, "quiet": True, "factor": 2})
    >>> sorted(settings), settings["iterations"], len(settings["defaults"])
    (['defaults', 'iterations', 'rules', 'seed', 'task'], 100, 12)
    """
    from ..engine.presets import DEFAULT_PRESET, defaults_fingerprint

    chosen = _used_by(task, {key: value for key, value in sorted(options.items()) if key not in NOT_SETTINGS})
    chosen["task"] = task
    chosen["defaults"] = defaults_fingerprint(task, options.get("preset") or DEFAULT_PRESET, options.get("factor"),
                                              options.get("device") or "auto")
    chosen["rules"] = rules_fingerprint(task, bool(options.get("volumetric")))
    return json.loads(json.dumps(chosen, default=str))


def partial_path(final: Path) -> Path:
    """A temporary name next to ``final``, unique to this attempt, with its suffix (the
    image writers pick the format by suffix)."""
    return final.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{final.name}")


def write_json_atomic(path: Path, record: dict) -> None:
    partial = partial_path(path)
    try:
        partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_record(sidecar: Path) -> dict | None:
    """The record, or ``None`` if there is none or it cannot be read (then it is redone)."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_done(record: dict | None, input_sha256: str, mask_sha256: str | None, settings: dict,
            output: Path) -> bool:
    """Whether ``record`` stands for a finished result of this input, mask and settings
    that is still in place, unchanged."""
    if not record or record.get("status") != "done":
        return False
    if (record.get("input") or {}).get("sha256") != input_sha256:
        return False
    if ((record.get("mask") or {}).get("sha256")) != mask_sha256:
        return False
    # Records written before TASK_ONLY kept every option; what the task does not use is
    # left out of both sides, so they still count.
    recorded = record.get("settings")
    if not isinstance(recorded, dict) or _used_by(settings.get("task", ""), recorded) != settings:
        return False
    expected = (record.get("output") or {}).get("sha256")
    return output.is_file() and expected is not None and file_sha256(output) == expected


def remove_partials(folder: Path) -> int:
    """Remove the temporary files interrupted attempts left in ``folder``; how many."""
    removed = 0
    # write_image's own temporary file inside ours is ".{stem}.partial{suffix}": one more dot.
    for path in [*Path(folder).glob(f"{PARTIAL_PREFIX}*"), *Path(folder).glob(f".{PARTIAL_PREFIX}*")]:
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed
