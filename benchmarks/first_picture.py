"""How long a user waits for the first sign of a fit: the first picture of the Python API
(what the widget shows) and the first counted iteration of the command line.

    python benchmarks/first_picture.py --out benchmarks/results/first-picture-cpu.json
    python benchmarks/first_picture.py --baseline 813b706   # the engine of another commit beside

Every measurement is a fresh Python process, as a command or a napari session's first Run
is: the first fit of a process pays the imports (torch, and ``torch._dynamo``, which the
first ``torch.optim`` optimiser imports), the noise estimate and the network's set-up.

* ``api``: from the child process's first line to the first snapshot of
  ``iter_restore(..., snapshot_seconds=2.0)`` (the widget's and the command's interval;
  ``--interval``),
  and from the call to it; then the same call again in the same process (a napari
  session's second Run).
* ``api-warm``: the same, after starting the device in the background
  (``napari_dip.engine.warm``, as a dock does when it opens) and ``--think`` seconds.
  Engines before the warm-up existed fail this mode.
* ``widget`` (needs napari, and a display or ``xvfb-run``): napari's Denoise dock at its
  defaults on the image, from Run to the first snapshot received, then Run again in the
  same session. ``--think`` seconds pass before each Run (a user choosing: since the
  dock starts its device in the background when it opens, this matters).
* ``cli``: ``napari-dip denoise IMAGE -o OUT`` from the process's start to its first
  progress line with at least one iteration done; the process is then stopped.

The inputs are scikit-image's camera (grey) and astronaut (RGB), resized to each
``--sizes`` entry, with Gaussian noise of ``--sigma`` rounded to 8 bits. ``--src`` (or
``--baseline COMMIT``, from a temporary git worktree) times another engine in the same
run, each case of both engines one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: The child of an ``api`` measurement: its clock starts before any import.
API_CHILD = """\
import time
process_start = time.perf_counter()
import json, sys
import imageio.v3 as iio
image, interval = iio.imread(sys.argv[1]), float(sys.argv[2])
from napari_dip import iter_restore
warm_up, warm_thread = {}, None
if len(sys.argv) > 3:  # api-warm: the device started in the background, as a dock does when it opens
    from napari_dip.engine import warm
    from napari_dip.engine.devices import resolve_device
    resolving = time.perf_counter()
    device = resolve_device("auto")  # on the caller's thread, as the dock's device line does
    warm_up["resolve_seconds"] = time.perf_counter() - resolving
    warm_thread = warm.start_warm_up(device)
    time.sleep(float(sys.argv[3]))
    warm_up["finished_before_call"] = not warm_thread.is_alive()
rows = []
for run in (1, 2):
    called = time.perf_counter()
    # By time only: at 32² a hundred iterations can come before the interval.
    snapshots = iter_restore("denoise", image, channel_axis=-1 if image.ndim == 3 else None, snapshot_every=None,
                             snapshot_seconds=interval)
    snap = next(iter(snapshots))
    shown = time.perf_counter()
    snapshots.close()
    if warm_thread is not None:
        warm_up["failure"] = warm.failures.get(str(device))
    rows.append({"run": run, "call_to_picture": shown - called, "process_to_picture": shown - process_start,
                 "iteration": snap.iteration, "fit_seconds": snap.elapsed, **({"warm_up": warm_up} if warm_up else {})})
print(json.dumps(rows))
"""

#: The child of a ``widget`` measurement: napari's Denoise dock at its defaults, Run twice.
WIDGET_CHILD = """\
import os, sys, tempfile, time
# napari's settings and caches of a fresh user, not this machine's user's.
for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
    os.environ[name] = tempfile.mkdtemp()
import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication
from napari_dip.widgets.dock import DenoiseWidget
import json
viewer = napari.Viewer(show=True)
viewer.add_image(iio.imread(sys.argv[1]), name="noisy", rgb=iio.imread(sys.argv[1]).ndim == 3)
widget = DenoiseWidget(viewer)
viewer.window.add_dock_widget(widget)
app = QApplication.instance()
think = float(sys.argv[2])
rows = []
for run in (1, 2):
    # The user choosing layers and settings before Run: napari goes on handling events.
    chosen = time.perf_counter() + think
    while time.perf_counter() < chosen:
        app.processEvents()
        time.sleep(0.01)
    pressed = time.perf_counter()
    widget.start()
    state = widget.run_state
    while state.snapshots_received < 1:
        if time.perf_counter() - pressed > 300:
            sys.exit("no picture 300 s after Run")
        app.processEvents()
        time.sleep(0.002)
    rows.append({"run": run, "run_to_picture": time.perf_counter() - pressed})
    widget.stop()
    while widget.run_state is not None:
        app.processEvents()
        time.sleep(0.01)
viewer.close()
print(json.dumps(rows))
"""

#: A progress line of the command with a count: "  3%|...| 10/300 [...]".
PROGRESS = re.compile(r"\|\s*(\d+)/(\d+)")


def noisy_image(size: int, colour: str, sigma: float, folder: Path) -> Path:
    import imageio.v3 as iio
    from skimage import data, img_as_float, transform

    clean = img_as_float(data.astronaut() if colour == "RGB" else data.camera())
    clean = transform.resize(clean, (size, size) + clean.shape[2:], anti_aliasing=True)
    noisy = clean + np.random.default_rng(0).normal(0, sigma / 255, clean.shape)
    path = folder / f"{colour}-{size}.png"
    iio.imwrite(path, np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8))
    return path


def child_env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src)}


def api_first_picture(image: Path, src: Path, interval: float, think: float | None = None) -> list[dict]:
    warm = [] if think is None else [str(think)]
    done = subprocess.run([sys.executable, "-c", API_CHILD, str(image), str(interval), *warm], capture_output=True,
                          text=True, env=child_env(src), stdin=subprocess.DEVNULL, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def widget_first_picture(image: Path, src: Path, think: float) -> list[dict]:
    import shutil

    command = [sys.executable, "-c", WIDGET_CHILD, str(image), str(think)]
    if not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("the widget mode needs a display or xvfb-run")
        command = ["xvfb-run", "-a", *command]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(src), stdin=subprocess.DEVNULL,
                          timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_first_count(image: Path, src: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "napari_dip.cli", "denoise", str(image), "-o", str(out), "--overwrite"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=child_env(src))
    first_line = None
    try:
        # tqdm redraws with carriage returns: read the stream in chunks, not lines.
        seen = b""
        while True:
            if not select.select([process.stderr], [], [], 300)[0]:
                raise RuntimeError(f"the command printed nothing for 300 s: {seen[-2000:]!r}")
            chunk = process.stderr.read1(4096)
            if not chunk:
                raise RuntimeError(f"the command ended before counting an iteration: {seen[-2000:]!r}")
            now = time.perf_counter() - started
            first_line = now if first_line is None else first_line
            seen += chunk
            counts = [int(m.group(1)) for m in PROGRESS.finditer(seen.decode(errors="replace"))]
            if any(count >= 1 for count in counts):
                return {"process_to_first_output": first_line, "process_to_first_count": now,
                        "iteration": max(counts)}
    finally:
        process.kill()
        process.wait()


def engine_src(args, stack) -> list[tuple[str, Path]]:
    engines = [("current", Path(args.src).resolve() if args.src else ROOT / "src")]
    if args.baseline:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from time_to_result import baseline_worktree, remove_worktree

        folder = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "baseline"
        src, _ = baseline_worktree(args.baseline, folder)
        stack.callback(remove_worktree, folder)
        engines.append((f"baseline {args.baseline}", src))
    return engines


def engine_commit(src: Path) -> str:
    """The commit of the checkout ``src`` is in, with ``+dirty`` when its tree has changes."""
    def git(*words):
        return subprocess.run(["git", "-C", str(src), *words], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", ".") else "")


def main(argv=None) -> int:
    import contextlib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512", help="comma-separated square sizes")
    parser.add_argument("--colours", default="grey,RGB")
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--modes", default="api,cli", help="api, api-warm, widget and/or cli")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="the API's snapshot_seconds (default: 2, as the widget and the command use)")
    parser.add_argument("--think", type=float, default=0.2,
                        help="widget and api-warm modes: seconds between the dock's creation (or the warm-up's "
                        "start, or the last picture) and Run, napari handling events meanwhile (default: 0.2)")
    parser.add_argument("--src", help="the engine's src folder (default: this checkout's)")
    parser.add_argument("--baseline", help="also time this commit's engine, from a git worktree")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    rows: list[dict] = []

    def save() -> None:
        """The rows so far (after every case: a GPU lease's cap may stop the script)."""
        if args.out:
            import torch

            result = {"date": date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version(), "torch": torch.__version__,
                      "command": " ".join(["python benchmarks/first_picture.py", *given]), "rows": rows}
            Path(args.out).write_text(json.dumps(result, indent=1))

    measures = {"api": lambda image, src: api_first_picture(image, src, args.interval),
                "api-warm": lambda image, src: api_first_picture(image, src, args.interval, args.think),
                "widget": lambda image, src: widget_first_picture(image, src, args.think),
                "cli": lambda image, src: [cli_first_count(image, src, image.with_suffix(".out.png"))]}
    failed = 0
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        engines = engine_src(args, stack)
        for size in [int(s) for s in args.sizes.split(",")]:
            for colour in args.colours.split(","):
                image = noisy_image(size, colour, args.sigma, folder)
                for name, src in engines:
                    case = {"size": size, "colour": colour, "engine": name, "commit": engine_commit(src)}
                    for mode in [m for m in measures if m in args.modes.split(",")]:
                        try:
                            measured = measures[mode](image, src)
                        except RuntimeError as error:  # one mode failing (a missing package) leaves the others
                            failed += 1
                            rows.append({**case, "mode": mode, "error": str(error)})
                            print(f"{size}² {colour} {name:>16} {mode}: failed: {error}", file=sys.stderr, flush=True)
                            measured = []
                        for row in measured:
                            rows.append({**case, "mode": mode, **row})
                            print(f"{size}² {colour} {name:>16} {mode}: {describe(mode, row)}", flush=True)
                        save()
    save()
    return 1 if failed else 0


def describe(mode: str, row: dict) -> str:
    if mode == "cli":
        return (f"first output {row['process_to_first_output']:.2f} s, first counted iteration ({row['iteration']}) "
                f"{row['process_to_first_count']:.2f} s after the process started")
    if mode == "widget":
        return f"run {row['run']}: first picture {row['run_to_picture']:.2f} s after Run"
    warm = row.get("warm_up")
    warmed = "" if warm is None else (f"; warm-up finished before the call: {warm['finished_before_call']}, "
                                      f"failure: {warm['failure']}, device resolved in {warm['resolve_seconds']:.2f} s")
    return (f"run {row['run']}: first picture {row['call_to_picture']:.2f} s after the call "
            f"({row['process_to_picture']:.2f} s after the process started), iteration {row['iteration']}{warmed}")

if __name__ == "__main__":
    sys.exit(main())
