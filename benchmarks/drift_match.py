"""What :func:`napari_dip.drift.picture_shift` measures on the stacks of ``stacks.py``, and
on planes that are not one picture moved: the drift (pixels of the result along Y or X)
and the match that the warm start's fresh-start rule reads
(``presets.WARM_START_MAX_DRIFT``, ``presets.WARM_START_MIN_MATCH``).

    python benchmarks/drift_match.py

For Set12 photographs' drifting frames (one pixel down and right a frame, as
``stacks.py`` makes them): the x4 low-resolution frames (SR), the frames with a new random
half of their pixels missing (inpainting, registered on the observed pixels), and the frames
with Gaussian noise of sigma 25 (denoising the paper's way), each against the first frame.
Then unrelated pictures, with and without a gradient of light they share, and the seconds
one registration takes at several sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--images", default="02.png,05.png,07.png")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128, help="frame size (a multiple of 4)")
    parser.add_argument("--sizes", default="32,128,512,2048", help="plane sizes to time a registration at")
    options = parser.parse_args(argv)

    from quality import make_lr
    from skimage import data
    from stacks import drifting_frames, load_grey

    from napari_dip.drift import picture_shift

    def cells(pairs):
        return " ".join(f"{s.largest * f:.1f}/{s.match:.2f}" for s, f in pairs)

    print("drift (px of the result) / match against the first frame, frames 2 on")
    for image in options.images.split(","):
        photo = load_grey(Path(options.data) / "denoise/Set12" / image)
        high = [np.round(c).astype(np.uint8) for c in drifting_frames(photo, options.frames, options.crop)]
        rng = np.random.default_rng(0)
        low = [make_lr(h, 4) / 255.0 for h in high]
        print(f"{image} SR x4      " + cells((picture_shift(low[0], lo), 4) for lo in low[1:]))
        known = [rng.random(h.shape) >= 0.5 for h in high]
        seen = [np.where(k, h / 255.0, 0.0) for h, k in zip(high, known)]
        print(f"{image} inpainting " + cells((picture_shift(seen[0], s, known[0][None], k[None]), 1)
                                             for s, k in zip(seen[1:], known[1:])))
        noisy = [h / 255.0 + rng.normal(0, 25 / 255, h.shape) for h in high]
        print(f"{image} sigma 25   " + cells((picture_shift(noisy[0], n), 1) for n in noisy[1:]))

    camera, moon, coins = data.camera() / 255.0, data.moon() / 255.0, data.coins() / 255.0
    ramp = np.linspace(0, 1, 128)[None].repeat(128, 0)
    rng = np.random.default_rng(1)
    others = {
        "camera / moon": (camera[:128, :128], moon[:128, :128]),
        "camera / coins": (camera[200:328, 200:328], coins[100:228, 100:228]),
        "camera / moon, one gradient of light": (0.5 * ramp + 0.5 * camera[:128, :128],
                                                 0.5 * ramp + 0.5 * moon[200:328, 200:328]),
        "two noises on one gradient of light": (ramp + 0.1 * rng.standard_normal(ramp.shape),
                                                ramp + 0.1 * rng.standard_normal(ramp.shape)),
        "two uniform noises, 32 px": (rng.random((32, 32)), rng.random((32, 32))),
    }
    print("\nunrelated planes: drift / match")
    for name, (a, b) in others.items():
        print(f"  {name:40s} {cells([(picture_shift(a, b), 1)])}")

    print("\nseconds of one registration (after a first call), plane moved (2, 3) px")
    for size in (int(s) for s in options.sizes.split(",")):
        plane = rng.random((size, size))
        moved = np.roll(plane, (2, 3), axis=(0, 1))
        picture_shift(plane, moved)
        start = time.perf_counter()
        picture_shift(plane, moved)
        plain = time.perf_counter() - start
        known = rng.random(plane.shape) > 0.5
        start = time.perf_counter()
        picture_shift(plane * known, moved * known, known, known)
        print(f"  {size:5d}²: {plain:.4f} s, with holes {time.perf_counter() - start:.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
