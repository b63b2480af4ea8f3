"""Does a fit repeat to the bit on this machine?

Runs the same small fit (inpainting a 64² crop of scikit-image's camera man, half its
pixels missing, ``fast`` preset, seed 0) in fresh processes, each thread count twice,
and prints the MD5 of each result with the kernels it ran on. On one machine the two
runs of a thread count should agree; across thread counts and across kinds of machine
they may not (BENCHMARKS.md "Reproducing a fit on another machine")::

    python benchmarks/repeat_check.py --threads 1,2 --iterations 60
"""

from __future__ import annotations

import argparse
import subprocess
import sys

WORKER = r"""
import hashlib, sys
import numpy as np, torch
from skimage import data
from napari_dip.restore import iter_restore
torch.set_num_threads(int(sys.argv[1]))
image = data.camera()[200:264, 200:264].astype(np.float32) / 255
known = np.random.default_rng(0).random(image.shape) < 0.5
final = None
for final in iter_restore("inpaint", image * known, mask=~known, iterations=int(sys.argv[2]), seed=0,
                          snapshot_every=None, preset="fast", threads=int(sys.argv[1])):
    pass
print(hashlib.md5(final.average.tobytes()).hexdigest(), final.settings["kernels"])
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args(argv)
    same = True
    for threads in options.threads.split(","):
        digests = []
        for _ in range(options.repeats):
            done = subprocess.run([sys.executable, "-c", WORKER, threads, str(options.iterations)],
                                  capture_output=True, text=True, check=True)
            digest, kernels = done.stdout.strip().split(" ", 1)
            digests.append(digest)
            print(f"{threads} threads: {digest}  ({kernels})")
        same &= len(set(digests)) == 1
    print("every thread count repeated to the bit" if same else "NOT REPEATED: a thread count gave different results")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
