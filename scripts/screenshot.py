"""Make the README screenshot: napari with the denoise widget docked, mid-fit.

Run under a display, or under Xvfb on a headless machine:

    xvfb-run -a .venv/bin/python scripts/screenshot.py [--output docs/napari-dip-widget.png]

It opens the plugin's noisy camera-man sample, picks the clean image as the PSNR
reference, runs the fast preset on the CPU, pauses after ``--pause-at`` iterations and
saves a picture of the whole window (PNG, palette-quantised to stay small).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/napari-dip-widget.png"))
    parser.add_argument("--pause-at", type=int, default=300, help="iteration at which to take the picture")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dip.widgets.dock import show_widget

    viewer = napari.Viewer(show=True, title="napari-dip")
    viewer.window.resize(1280, 760)
    viewer.open_sample("napari-dip", "noisy_camera")
    _dock, widget = show_widget(viewer, "denoise")
    form = widget.form
    form.preset.value = "fast"  # loads the preset's values into the advanced section
    form.device.value = "cpu"
    form.iterations.value = args.iterations
    form.update_every.value = 10
    form.reference.value = viewer.layers["camera (clean)"]
    widget.advanced.expand(animate=False)

    widget.start()
    run = widget.run_state
    start = time.monotonic()
    while run.done_iterations < args.pause_at:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - start > args.timeout:
            raise SystemExit(f"no screenshot: only {run.done_iterations} iterations after {args.timeout:.0f} s")
        if widget.run_state is None:
            break
    widget.toggle_pause()
    deadline = time.monotonic() + 30
    while run.worker is not None and not run.worker.is_paused and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the last update and the paused state draw
        QApplication.processEvents()
        time.sleep(0.02)
    # Show noisy and restored side by side: grid mode with the two visible layers.
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.layers["camera (clean)"].visible = False
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.02)

    picture = viewer.screenshot(canvas_only=False, flash=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    _save_small_png(args.output, picture)

    widget.stop()
    deadline = time.monotonic() + 30
    while widget.run_state is not None and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.close()
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB) at iteration {run.done_iterations}")
    return args.output


def _save_small_png(path: Path, rgba: np.ndarray) -> None:
    """Save as a 256-colour PNG: a UI picture loses nothing visible and stays small."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


if __name__ == "__main__":
    main()
