"""The command line's progress bar as a user sees it: every redraw, with the seconds since start.

    python benchmarks/cli_bar.py --src src > bar.txt                  # this checkout's engine
    python benchmarks/cli_bar.py --src /tmp/worktree-of-REV/src      # another commit's

Runs ``napari-dip denoise`` of ``--src`` (first on ``PYTHONPATH``) on ``--image``, by default
the 128² top-left crop of scikit-image's ``camera`` with Gaussian noise of sigma 25/255
(seed 0, float32), and prints each line or carriage-return redraw as it arrives. What it
shows: when the first line comes, and where the bar counts to (``n/total``, the ETA) as the
fit goes. A final summary line counts the redraws where the percentage fell.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def camera_image(folder: Path) -> Path:
    import numpy as np
    import tifffile
    from skimage import data

    clean = data.camera()[:128, :128] / 255.0
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
    path = folder / "camera128-sigma25.tif"
    tifffile.imwrite(path, noisy)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="the src folder whose napari_dip to run")
    parser.add_argument("--image", help="a noisy image (default: the camera crop above)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        image = Path(options.image) if options.image else camera_image(Path(folder))
        env = {**os.environ, "PYTHONPATH": str(Path(options.src).resolve())}
        code = ("import sys, napari_dip; print('napari_dip from', napari_dip.__file__, file=sys.stderr); "
                "from napari_dip.cli import main; sys.exit(main())")
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", code, "denoise", str(image), "-o",
                                    str(Path(folder) / "out.tif")], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=0, env=env)
        percentages, line = [], ""
        while character := process.stdout.read(1):
            if character not in "\r\n":
                line += character
                continue
            if line:
                print(f"{time.perf_counter() - start:7.2f} {line}", flush=True)
                if match := re.search(r"(\d+)%\|", line):
                    percentages.append(int(match.group(1)))
            line = ""
        status = process.wait()
    falls = [a - b for a, b in zip(percentages, percentages[1:]) if b < a]
    print(f"{len(percentages)} redraws, the percentage fell {len(falls)} times (at most {max(falls, default=0)} points)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
