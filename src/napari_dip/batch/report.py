"""The batch's summary in its output folder: ``report.csv`` (one row per input) and
``report.html`` (the same table with before/after thumbnails, as inline PNG data URIs so
the page is one file that can be mailed or archived with the results)."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path

import numpy as np

from .job import COLUMNS
from .records import partial_path

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIZE = 160


def thumbnail(data: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """An 8-bit picture of an image for a person: the middle plane of a stack, grey or RGB,
    contrast stretched between the 0.5th and 99.5th percentiles, at most ``size`` pixels
    on its longest side.

    >>> thumbnail(np.arange(400 * 300, dtype=np.uint16).reshape(400, 300)).shape
    (160, 120)
    >>> thumbnail(np.zeros((5, 3, 64, 64))).dtype
    dtype('uint8')
    """
    picture = np.asarray(data, np.float64)
    colour = picture.ndim >= 3 and picture.shape[-1] in (3, 4)
    while picture.ndim > (3 if colour else 2):  # the middle of every leading axis
        picture = picture[picture.shape[0] // 2]
    if colour:
        picture = picture[..., :3]
    low, high = np.percentile(picture, (0.5, 99.5)) if picture.size else (0.0, 1.0)
    scaled = np.clip((picture - low) / (high - low), 0, 1) if high > low else np.zeros_like(picture)
    longest = max(scaled.shape[:2])
    if longest > size:
        from skimage.transform import resize

        shape = tuple(max(1, round(n * size / longest)) for n in scaled.shape[:2]) + scaled.shape[2:]
        scaled = resize(scaled, shape, anti_aliasing=True)
    return (scaled * 255).round().astype(np.uint8)


def data_uri(path: str | os.PathLike) -> str:
    """The thumbnail of an image file as a ``data:image/png;base64,...`` URI, or ``""``."""
    from PIL import Image

    from ..io import read_image

    try:
        picture = thumbnail(read_image(path).data)
    except Exception:  # noqa: BLE001 - an unreadable file has no thumbnail; its row says why
        return ""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_reports(rows: list[dict], folder: Path, title: str = "napari-dip batch") -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.html`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    csv_path, html_path = folder / "report.csv", folder / "report.html"
    _write_atomic(csv_path, _csv_text(rows))
    _write_atomic(html_path, _html_text(rows, title))
    return csv_path, html_path


def _write_atomic(path: Path, text: str) -> None:
    partial = partial_path(path)
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _html_text(rows: list[dict], title: str) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    lines = [
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        "tr.failed{background:#fdd}img{image-rendering:pixelated}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{len(rows)} inputs: {html.escape(summary)}</p>",
        "<table><tr><th>input</th><th>before</th><th>after</th><th>status</th><th>noise estimate</th>"
        "<th>stop reason</th><th>iterations</th><th>seconds</th><th>notes</th></tr>",
    ]
    for row in rows:
        before = data_uri(row["input"])
        after = data_uri(row["output"]) if row["status"] in ("done", "skipped") else ""
        cells = [
            html.escape(Path(row["input"]).name),
            f'<img src="{before}" alt="input">' if before else "",
            f'<img src="{after}" alt="result">' if after else "",
            html.escape(row["status"]),
            html.escape(_number(row["noise_estimate"], 4)),
            html.escape(str(row["stop_reason"])),
            html.escape(str(row["iterations"])),
            html.escape(_number(row["seconds"], 1)),
            html.escape(" ".join(part for part in (row["error"], row["warnings"]) if part)),
        ]
        lines.append(f'<tr class="{html.escape(row["status"])}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines += ["</table>", "<p>Noise estimate: standard deviation of Gaussian noise on the image's value range "
              "scaled to [0, 1] (none for inpainting).</p>", "</body></html>", ""]
    return "\n".join(lines)
