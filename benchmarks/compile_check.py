"""torch.compile of the fast network on the CPU: seconds of the first 10 steps (the compile)
and per step after, eager (arg 2 = 0) or compiled (1). Run it twice with the same cache
folder to see inductor's cache reused (BENCHMARKS.md, issue 9):

    C=$(mktemp -d); for m in 0 1 1; do env -u TORCHINDUCTOR_CACHE_DIR XDG_CACHE_HOME=$C \
        PYTHONPATH=src python benchmarks/compile_check.py 128 $m; done
"""
import sys, time, json
t0 = time.perf_counter()
import numpy as np, torch
from napari_dip.engine.fit import Fitter
from napari_dip.engine.forward import Identity
from napari_dip.engine.presets import settings_for
size, compile_ = int(sys.argv[1]), sys.argv[2] == "1"
net, cfg = settings_for("denoise", "fast", stopping="none", iterations=60, device="cpu", seed=0, threads=2, compile=compile_)
image = np.random.default_rng(0).uniform(0, 1, (1, size, size)).astype(np.float32)
fitter = Fitter(image, Identity(), net, cfg)
marks = {s.iteration: s.elapsed for s in fitter.run(snapshot_every=10)}
print(json.dumps({"compile": compile_, "first_10_s": marks[10], "per_step_after": (marks[60] - marks[10]) / 50,
                  "compiled": fitter.compiled}), flush=True)
