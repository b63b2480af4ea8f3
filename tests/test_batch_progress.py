"""A batch's iteration progress and its cancel (issue 12): fit progress messages from the
workers of a LocalCluster on the loopback interface (and from this process), a cancel that
stops fits in work long before their budget and leaves nothing of them, the command's
progress without a terminal, and the Batch widget's Cancel under Xvfb.

Fits are tiny (32x32 pixels, 8 network channels, the fast preset, one thread): ~80
iterations a second on the 2-core CPU, so a few hundred iterations last a few seconds.
"""

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from napari_dip.batch import restore_files
from napari_dip.batch.progress import MIN_INTERVAL, TOPIC
from napari_dip.batch.records import PARTIAL_PREFIX
from napari_dip.cli import main
from tiny import noisy_grey as _noisy, png_folder as _folder, takes_ctrl_c

FIT = {"preset": "fast", "channels": 8, "device": "cpu", "stop": "none", "progress_every": 2}


def _report(out: Path) -> list[dict]:
    with open(out / "report.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _written(out: Path) -> list[str]:
    """What the batch left in its folder besides the report."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("report."))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_workers_report_each_fits_iterations_in_order(tmp_path, client):
    data = _folder(tmp_path, 2)
    messages = []
    rows = restore_files(data, task="denoise", out=tmp_path / "out", client=client, progress=messages.append,
                         iterations=200, **FIT)
    assert [r["status"] for r in rows] == ["done", "done"]
    fits = [m for m in messages if m["kind"] == "fit"]
    workers = set()
    for i in range(2):
        mine = [m for m in fits if Path(m["input"]).name == f"img{i}.png"]
        steps = [m for m in mine if not m["done"]]
        iterations = [m["iteration"] for m in steps]
        assert len(iterations) >= 3, mine  # progress while the fit runs, not only at its end
        assert iterations == sorted(set(iterations)) and iterations[-1] == 200  # monotone, the last one sent
        assert all(m["budget"] == 200 and m["part"] == 1 for m in steps)
        assert [m["iterations_done"] for m in steps] == iterations
        assert mine[-1]["done"]  # then the fit says it is over
        # Throttled on the worker: at most one message per MIN_INTERVAL, the last one aside.
        gaps = np.diff([m["seconds"] for m in steps[:-1]])
        assert (gaps >= MIN_INTERVAL * 0.9).all(), gaps
        workers |= {m["worker"] for m in mine}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    # Each message carries the batch's count; images finish one by one.
    assert [m["images_done"] for m in messages if m["kind"] == "image"] == [1, 2]
    assert all(m["images_total"] == 2 for m in messages)


def test_cancel_stops_fits_in_work_writes_nothing_and_a_rerun_does_them(tmp_path, client):
    data = _folder(tmp_path, 3)  # two workers: two fits in work, one image not started
    out = tmp_path / "out"
    cancel = threading.Event()
    asked = {}

    def progress(message):
        if message["kind"] == "fit" and message.get("iteration", 0) >= 10:
            asked.setdefault(message["input"], time.monotonic())
            if len(asked) == 2 and not cancel.is_set():  # both fits under way
                cancel.set()

    started = time.monotonic()
    # A budget of 2,000 iterations (~25 s a fit) leaves room for the cancel's round trips
    # through the scheduler on a slow or busy machine: at 400, a 2.5 s stop reached 200 in CI.
    rows = restore_files(data, task="denoise", out=out, client=client, progress=progress, cancel=cancel,
                         iterations=2000, **FIT)
    stopped = time.monotonic() - max(asked.values())
    assert cancel.is_set()
    assert [r["status"] for r in rows] == ["cancelled"] * 3, rows
    in_work = [r for r in rows if "iteration" in r["error"]]
    assert len(in_work) == 2
    for row in in_work:  # stopped where they were, far from the 2,000 of the budget
        assert int(row["error"].split("iteration ")[1].split(";")[0]) < 1000, row
    # Either not started, or started after the cancel and stopped before its fit.
    assert any(r["error"] in ("not started", "cancelled before its fit started; nothing written") for r in rows)
    # The batch returned soon after the cancel: not after the fits' budget (~25 s here) nor
    # after the 60 s grace it gives fits that do not stop. The stop itself took 1-2.5 s.
    assert stopped < 20, (stopped, time.monotonic() - started)
    assert _written(out) == []  # no result, no record, no temporary file
    assert [r["status"] for r in _report(out)] == ["cancelled"] * 3

    again = restore_files(data, task="denoise", out=out, client=client, progress=False, iterations=400, **FIT)
    assert [r["status"] for r in again] == ["done"] * 3
    assert [r["iterations"] for r in again] == [400] * 3
    assert _written(out) == sorted([f"img{i}.png" for i in range(3)] + [f"img{i}.png.json" for i in range(3)])


def test_ctrl_c_stops_the_fits_in_work_on_a_remote_cluster(tmp_path, client):
    """The command on a running scheduler (a cluster that outlives it): Ctrl-C stops the fits
    in work too, not only the tasks not started, which Dask alone cannot do."""
    data, out = _folder(tmp_path, 2), tmp_path / "out"
    messages = []
    client.subscribe_topic(TOPIC, lambda event: messages.append(event[1]))
    command = [sys.executable, "-m", "napari_dip.cli", "batch", str(data), "--task", "denoise", "--out", str(out),
               "--scheduler", client.scheduler.address, "--preset", "fast", "--channels", "8", "--iterations",
               "5000", "--stop", "none", "--device", "cpu", "--progress-every", "2"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "CI": "true"}, preexec_fn=takes_ctrl_c)
    try:
        deadline = time.monotonic() + 120
        while len({m["input"] for m in messages if m.get("iteration", 0) >= 10}) < 2:  # both fits under way
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, err = process.communicate(timeout=60)
        while len({m["input"] for m in messages if m["done"]}) < 2 and time.monotonic() - interrupted < 60:
            time.sleep(0.05)
    finally:
        process.kill()
        client.unsubscribe_topic(TOPIC)
    assert process.returncode == 130, err
    assert "interrupted: 2 interrupted" in err and "run the same command again" in err
    ends = {m["input"]: m for m in messages if m["done"]}
    assert len(ends) == 2
    # Both fits ended within seconds of Ctrl-C, far from their 5,000 iterations (~60 s each).
    assert max(m["seconds"] for m in ends.values()) - min(m["seconds"] for m in ends.values()) < 30
    assert time.monotonic() - interrupted < 30  # half a fit's ~60 s; it took a few seconds
    assert max(m["iteration"] for m in messages if not m["done"]) < 2500
    assert [r["status"] for r in _report(out)] == ["interrupted", "interrupted"]
    time.sleep(1)  # what a fit still running could have written by now
    assert _written(out) == []


def test_progress_and_cancel_in_this_process(tmp_path):
    data = _folder(tmp_path, 2)
    out = tmp_path / "out"
    cancel = threading.Event()
    messages = []

    def progress(message):
        messages.append(message)
        if message["kind"] == "fit" and message.get("iteration", 0) >= 20:
            cancel.set()

    rows = restore_files(data, task="denoise", out=out, workers=0, progress=progress, cancel=cancel,
                         iterations=5000, **FIT)
    assert [r["status"] for r in rows] == ["cancelled", "cancelled"]
    assert rows[0]["error"].startswith("cancelled at iteration ") and rows[1]["error"] == "not started"
    fits = [m["iteration"] for m in messages if m["kind"] == "fit" and not m["done"]]
    assert fits == sorted(fits) and max(fits) < 200 and all(m["worker"] == "here" for m in messages[:1])
    assert not list(out.glob("img*")) and not list(out.glob(f"*{PARTIAL_PREFIX}*"))


def _snap(iteration, done=False, tile=None, budget=100, expected_stop=None):
    snap = SimpleNamespace(iteration=iteration, iterations=budget, done=done, loss=0.01, expected_stop=expected_stop)
    if tile is not None:
        snap.tile = tile
    return snap


def test_a_stacks_planes_and_tiles_count_on_and_the_fit_stops_when_cancelled(monkeypatch):
    from napari_dip.batch.progress import FitCancelled, FitWatch, LocalChannel

    # Every snapshot reported and every one looks at the cancel request, to see them all.
    monkeypatch.setattr("napari_dip.batch.progress.MIN_INTERVAL", 0.0)
    monkeypatch.setattr("napari_dip.batch.progress.CANCEL_CHECK_INTERVAL", 0.0)
    sent, cancel = [], threading.Event()
    watch = FitWatch(LocalChannel(sent.append, cancel), "b", "/d/stack.tif")
    # A tiled plane's tiles end without done (engine.tiling.TiledFit); its blended result is done.
    pairs = [((0,), _snap(50)), ((0,), _snap(100, done=True)), ((1,), _snap(20, tile=(1, 2))),
             ((1,), _snap(40, tile=(1, 2))), ((1,), _snap(30, tile=(2, 2))),
             ((1,), _snap(40, tile=(2, 2))), ((1,), _snap(80, done=True, tile=(2, 2)))]
    assert list(watch(iter(pairs))) == pairs  # passed through untouched
    # Plane 1, plane 2's tile 1, its tile 2; the blended plane (done, with a tile) is no part.
    assert [(m["part"], m["iteration"], m["iterations_done"]) for m in sent] == [
        (1, 50, 50), (1, 100, 100), (2, 20, 120), (2, 40, 140), (3, 30, 170), (3, 40, 180)]
    cancel.set()
    with pytest.raises(FitCancelled) as stopped:
        list(watch(iter([((2,), _snap(10)), ((2,), _snap(20))])))
    assert stopped.value.iteration == 10  # at the first snapshot after the cancel


def test_the_bar_shows_the_images_in_work_on_a_terminal(monkeypatch):
    import io

    from napari_dip.batch.progress import BatchProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    told = []
    progress = BatchProgress(3, bar=True, callback=told.append, batch="b")
    progress.fit({"batch": "b", "input": "/d/img0.png", "part": 1, "iteration": 120, "budget": 3000,
                  "expected_stop": 480, "done": False})
    progress.fit({"batch": "other", "input": "/d/x.png", "part": 1, "iteration": 1, "budget": 9, "done": False})
    progress.image({"input": "/d/img1.png", "status": "skipped"})
    progress.close()
    assert "img0.png 120/~480" in screen.getvalue() and "1 skipped" in screen.getvalue()
    assert "x.png" not in screen.getvalue()  # another batch's fit on the same scheduler
    assert [(m["kind"], m["images_done"], m["images_total"]) for m in told] == [("fit", 0, 3), ("image", 1, 3)]


def test_the_command_shows_progress_without_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr("sys.stdin", None)
    data = _folder(tmp_path, 2)
    status = main(["batch", str(data), "--task", "denoise", "--out", str(tmp_path / "out"), "--workers", "0",
                   "--preset", "fast", "--channels", "8", "--iterations", "4", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "2/2" in err and "image" in err and "2 done" in err


# -- the Batch widget (napari under Xvfb)


def _tiny_widget(viewer, iterations):
    from napari_dip.widgets.batch import BatchWidget

    widget = BatchWidget(viewer)
    widget.preset.value = "fast"
    widget.iterations.value = iterations
    viewer.window.add_dock_widget(widget, name="Batch")
    return widget


@pytest.mark.gui
def test_widget_shows_a_layers_iterations_and_cancel_stops_its_fit(make_napari_viewer, qtbot):
    pytest.importorskip("napari")
    viewer = make_napari_viewer()
    first = viewer.add_image(_noisy(0), name="first")
    second = viewer.add_image(_noisy(1), name="second")
    viewer.layers.selection = {first, second}
    widget = _tiny_widget(viewer, 20_000)
    widget.start()
    qtbot.waitUntil(lambda: "first " in widget.status.value and "/" in widget.status.value, timeout=60_000)
    assert widget.status.value.startswith("0/2 images; first ")  # e.g. "0/2 images; first 40/~220"
    shown = time.monotonic()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert time.monotonic() - shown < 30  # the fit stopped, far from its 20,000 iterations (~4 min)
    assert [layer.name for layer in viewer.layers] == ["first", "second"]  # nothing of it kept
    assert widget.status.value == "cancelled: 1 cancelled"
    assert widget.rows[0]["error"].startswith("cancelled at iteration ")
    assert int(widget.rows[0]["error"].split("iteration ")[1].split(";")[0]) < 2000


@pytest.mark.gui
def test_widget_cancel_stops_a_folders_fit_in_work(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("napari")
    from napari_dip.widgets.batch import FOLDER

    data, out = _folder(tmp_path, 2), tmp_path / "out"
    viewer = make_napari_viewer()
    widget = _tiny_widget(viewer, 20_000)
    widget.source.value = FOLDER
    widget.folder.value, widget.out.value, widget.workers.value = data, out, 0
    widget.start()
    qtbot.waitUntil(lambda: "img0.png " in widget.status.value, timeout=60_000)
    shown = time.monotonic()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert time.monotonic() - shown < 30  # far from the 20,000 iterations' ~4 min
    # The fit in work and the file never started: the summary counts both, as the report does.
    assert widget.status.value.startswith("cancelled: 2 cancelled")
    assert [r["status"] for r in _report(out)] == ["cancelled", "cancelled"]
    assert _written(out) == []


@pytest.mark.gui
def test_widget_settings_are_the_task_widgets_form(make_napari_viewer, qtbot, tmp_path):
    """Device, noise model, factor and the advanced settings come from the task widget's
    form, and reach the results' records by the command line's names."""
    import json

    pytest.importorskip("napari")
    from napari_dip.widgets.batch import FOLDER

    viewer = make_napari_viewer()
    widget = _tiny_widget(viewer, 4)

    def shown(part):
        return part.native.isVisibleTo(widget.native)

    form = widget.form
    assert form.task == "denoise" and shown(form.noise) and shown(form.device) and shown(form.channels)
    assert not shown(form.image) and not shown(form.planes)  # one layer's options are not shown
    widget.task.value = "super-resolve"
    assert widget.form.task == "super-resolve" and shown(widget.form.factor) and not shown(form.noise)
    widget.task.value = "denoise"
    assert widget.form is form
    form.device.value = "cpu"
    form.stopping.value = "none"
    form.channels.value = 8
    form.learning_rate.value = 0.02
    form.update_every.value = 2
    assert not shown(form.uncertainty_layer) and not shown(form.residual_layer)  # layers of one image's fit
    form.runs.value = 2
    assert widget.settings()["runs"] == 2
    form.runs.value = 1
    assert widget.settings() == {"preset": "fast", "device": "cpu", "iterations": 4, "learning_rate": 0.02,
                                 "channels": 8, "seed": 0, "progress_every": 2, "stop": "none", "noise": "auto"}
    # The Network input reaches the batch as the command line's --recorrupt / --no-recorrupt.
    form.network_input.value = "noise"
    assert widget.settings()["recorrupt"] is False
    form.network_input.value = "auto"
    data, out = _folder(tmp_path, 1), tmp_path / "out"
    widget.source.value = FOLDER
    widget.folder.value, widget.out.value, widget.workers.value = data, out, 0
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("finished: 1 done"), widget.status.value
    settings = json.loads((out / "img0.png.json").read_text())["settings"]
    chosen = (settings["channels"], settings["stop"], settings["device"], settings["learning_rate"])
    assert chosen == (8, "none", "cpu", 0.02)


@pytest.mark.gui
def test_widget_inpaints_layers_with_the_forms_mask_box(make_napari_viewer, qtbot):
    pytest.importorskip("napari")
    viewer = make_napari_viewer()
    image = viewer.add_image(_noisy(3), name="cells")
    holes = np.zeros((32, 32), np.uint8)
    holes[10:16, 10:16] = 1
    viewer.add_labels(holes, name="holes")
    viewer.layers.selection = {image}
    widget = _tiny_widget(viewer, 20)
    widget.task.value = "inpaint"
    widget.preset.value = "fast"
    widget.iterations.value = 20
    assert widget.form.mask.value is viewer.layers["holes"]
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value == "finished: 1 done", widget.status.value
    result = viewer.layers["cells [DIP inpaint fast seed 0]"]
    known = holes == 0
    # The known pixels are kept as they are (raw output off), the holes filled by the network.
    np.testing.assert_array_equal(result.data[known], image.data[known])
    assert result.metadata["napari_dip"]["iterations_run"] == 20
