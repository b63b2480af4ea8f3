"""Check by hand that a process leaving napari-dip's docks open exits cleanly, N times.

An earlier version of the docks' scroll areas crashed PyQt's clean-up at interpreter exit
(a segmentation fault) when a script docked Batch and then Denoise, grabbed the window and
exited without closing the viewer, its widgets still module globals: 4 runs of 4 with the
scroll areas of f2c1e03. The crash depends on how the script holds its widgets, so the
child below is written as such a script. ``tests/test_widget.py`` runs it twice; by hand,
under Xvfb on a headless machine:

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/docks_exit_check.py --runs 10

Each run is a fresh process (``--child``); the script prints each exit status and how
many were not 0, and exits 1 if any was not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--child", metavar="PNG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    statuses = []
    with tempfile.TemporaryDirectory() as sandbox:
        env = {**os.environ, "XDG_CONFIG_HOME": os.path.join(sandbox, "config"),
               "XDG_CACHE_HOME": os.path.join(sandbox, "cache")}
        for run in range(args.runs):
            done = subprocess.run([sys.executable, __file__, "--child", os.path.join(sandbox, f"{run}.png")],
                                  capture_output=True, env=env)
            statuses.append(done.returncode)
            print(f"run {run + 1}: exit status {done.returncode}", flush=True)
    failed = sum(status != 0 for status in statuses)
    print(f"{failed} of {len(statuses)} runs exited with a status other than 0")
    return 1 if failed else 0


if __name__ == "__main__" and "--child" in sys.argv:
    # The child, at module level as a user's script would be: the crash depended on the
    # viewer and the docks living as globals until the interpreter tore them down.
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dip.widgets.batch import BatchWidget
    from napari_dip.widgets.dock import DenoiseWidget

    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1300, 740)
    window.move(0, 0)
    docked = []
    for widget_class in (BatchWidget, DenoiseWidget):
        widget = widget_class(viewer)
        docked.append(widget)
        viewer.window.add_dock_widget(widget, name=widget_class.__name__)
    end = time.time() + 1.5
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    window.grab().save(sys.argv[sys.argv.index("--child") + 1])
    print("docked")
    # No viewer.close(): the interpreter tears the docks down at exit.
elif __name__ == "__main__":
    sys.exit(main())
