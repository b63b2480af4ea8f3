"""``napari-dip batch`` and ``napari_dip.batch.restore_files``: inputs and masks, the
records next to the results, resume, bad files, the report, and Dask fault tolerance on a
LocalCluster on the loopback interface (a worker killed mid-batch).

Fits are tiny (32x32 pixels, 8 network channels, a few iterations on the CPU): what is
checked is the bookkeeping, not restoration quality.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_dip.batch import restore_files
from napari_dip.batch.inputs import plan_items
from napari_dip.batch.records import PARTIAL_PREFIX, file_sha256
from napari_dip.cli import main
from napari_dip.errors import InputError
from napari_dip.io import read_provenance
from tiny import noisy_grey as _noisy, png_folder as _folder, takes_ctrl_c

FIT = {"preset": "fast", "channels": 8, "iterations": 4, "device": "cpu"}
FIT_ARGS = ["--preset", "fast", "--channels", "8", "--iterations", "4", "--device", "cpu", "-q"]


def _state(folder: Path) -> dict:
    """Every file's bytes and modification time (report files aside)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if not p.name.startswith("report.")}


def _report(out: Path) -> list[dict]:
    with open(out / "report.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_inputs_folders_globs_and_mask_matching(tmp_path):
    data = _folder(tmp_path, 3)
    iio.imwrite(data / "img0_mask.png", np.zeros((32, 32), np.uint8))
    iio.imwrite(data / "img1_mask.png", np.zeros((32, 32), np.uint8))
    (data / "notes.txt").write_text("not an image")
    items = plan_items([data], tmp_path / "out", "inpaint", "{stem}_mask.png")
    # Masks are not inputs; an input without its mask is a problem of its own, not of the batch.
    assert [i.input.name for i in items] == ["img0.png", "img1.png", "img2.png"]
    assert [i.mask.name for i in items] == ["img0_mask.png", "img1_mask.png", "img2_mask.png"]
    assert [i.problem is None for i in items] == [True, True, False]
    assert "no mask" in items[2].problem and "img2_mask.png" in items[2].problem
    assert items[0].output == tmp_path / "out" / "img0.png"
    assert items[0].sidecar == tmp_path / "out" / "img0.png.json"
    # Denoising takes every image, the masks too; a glob and a folder naming a file twice give it once.
    names = [i.input.name for i in plan_items([str(data / "img*.png"), data], tmp_path / "o", "denoise")]
    assert names == ["img0.png", "img0_mask.png", "img1.png", "img1_mask.png", "img2.png"]


@pytest.mark.parametrize("make_inputs,out,message", [
    (lambda d: [d], lambda d: d, "replaced by its own result"),
    (lambda d: [d / "img0.png", d / "sub" / "img0.png"], lambda d: d / "out", "same name"),
    (lambda d: [d / "nothing*.tif"], lambda d: d / "out", "matches no"),
    (lambda d: [d / "missing.png"], lambda d: d / "out", "no such file"),
])
def test_batches_that_cannot_work_are_refused_before_anything_runs(tmp_path, make_inputs, out, message):
    data = _folder(tmp_path, 1)
    (data / "sub").mkdir()
    iio.imwrite(data / "sub" / "img0.png", _noisy(5))
    with pytest.raises(InputError, match=message):
        plan_items(make_inputs(data), out(data), "denoise")
    with pytest.raises(InputError, match="mask-pattern"):
        plan_items([data], tmp_path / "out", "inpaint")


@pytest.mark.parametrize("task,bad,message", [
    ("denoise", {"preset": "bogus"}, "unknown preset"),
    ("super-resolve", {"factor": 5}, "factor must be one of"),
])
def test_a_bad_preset_or_factor_fails_each_file_before_its_fit(tmp_path, task, bad, message):
    # The record's settings need them: checked before each fit, so a bad one is a failed
    # row that says why, not an error after the fit that loses its result.
    data = _folder(tmp_path, 2)
    out = tmp_path / "out"
    rows = restore_files(data, task=task, out=out, workers=0, progress=False, **{**FIT, **bad})
    assert [r["status"] for r in rows] == ["failed"] * 2
    assert all(message in r["error"] for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.html"]
    # Also where a record of an earlier, good run is there.
    assert [r["status"] for r in restore_files(data, task=task, out=out, workers=0, progress=False,
                                               **FIT)] == ["done"] * 2
    rows = restore_files(data, task=task, out=out, workers=0, progress=False, **{**FIT, **bad})
    assert [r["status"] for r in rows] == ["failed"] * 2 and all(message in r["error"] for r in rows)


def test_record_contents_and_a_rerun_that_changes_nothing(tmp_path):
    data = _folder(tmp_path, 3)
    out = tmp_path / "out"
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=3, **FIT)
    assert [r["status"] for r in rows] == ["done"] * 3
    record = json.loads((out / "img1.png.json").read_text())
    assert record["input"] == {"path": str((data / "img1.png").resolve()), "sha256": file_sha256(data / "img1.png")}
    assert record["output"]["sha256"] == file_sha256(out / "img1.png")
    assert record["settings"]["iterations"] == 4 and record["settings"]["task"] == "denoise"
    assert record["settings"]["threads"] == 1  # one image per core, not one fit over the cores
    assert record["seed"] == 3 and record["iterations"] == 4 and record["stop_reason"] == "budget"
    assert record["seconds"] > 0 and record["napari_dip"] and record["status"] == "done"
    assert 0 < record["noise_estimate"] < 0.2
    assert read_provenance(out / "img1.png")["fit"]["seed"] == 3  # the result says how it was made, too
    before = _state(out)

    again = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=3, **FIT)
    assert [r["status"] for r in again] == ["skipped"] * 3
    assert [r["iterations"] for r in again] == [4] * 3  # the report still has each result's figures
    assert _state(out) == before  # not a byte nor a timestamp changed

    # A changed input is redone, the others not; changed settings or --force redo everything.
    iio.imwrite(data / "img2.png", _noisy(42))
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=3, **FIT)
    assert [r["status"] for r in rows] == ["skipped", "skipped", "done"]
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=4, **FIT)
    assert [r["status"] for r in rows] == ["done"] * 3
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=4, force=True, **FIT)
    assert [r["status"] for r in rows] == ["done"] * 3
    # A result replaced behind the batch's back no longer counts as done.
    (out / "img0.png").write_bytes((out / "img1.png").read_bytes())
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, seed=4, **FIT)
    assert [r["status"] for r in rows] == ["done", "skipped", "skipped"]


def test_an_option_the_task_does_not_use_redoes_nothing(tmp_path):
    # The batch command takes --factor and the mask options whatever the task.
    data = _folder(tmp_path, 2)
    out = tmp_path / "out"
    args = ["batch", str(data), "--task", "denoise", "--out", str(out), "--workers", "0", *FIT_ARGS]
    assert main([*args, "--factor", "2"]) == 0
    before = _state(out)
    assert main([*args, "--factor", "3", "--mask-known", "--raw-output"]) == 0
    assert _state(out) == before
    assert "factor" not in json.loads((out / "img0.png.json").read_text())["settings"]
    # A record written before such options were left out (it has the default factor) still counts.
    sidecar = out / "img0.png.json"
    record = json.loads(sidecar.read_text())
    record["settings"] = {**record["settings"], "factor": 4, "mask_known": False, "raw_output": False}
    sidecar.write_text(json.dumps(record))
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **FIT)
    assert [r["status"] for r in rows] == ["skipped"] * 2
    # For super-resolution the factor decides the result.
    sr = ["batch", str(data), "--task", "super-resolve", "--out", str(tmp_path / "sr"), "--workers", "0", *FIT_ARGS]
    assert main([*sr, "--factor", "2"]) == 0
    rows = restore_files(data, task="super-resolve", out=tmp_path / "sr", workers=0, progress=False, factor=3, **FIT)
    assert [r["status"] for r in rows] == ["done"] * 2
    # The noise model is denoising's: naming Gaussian noise changes no super-resolution.
    rows = restore_files(data, task="super-resolve", out=tmp_path / "sr", workers=0, progress=False, factor=3,
                         noise="gaussian", **FIT)
    assert [r["status"] for r in rows] == ["skipped"] * 2


def test_results_made_with_other_defaults_are_redone(tmp_path, monkeypatch):
    # The same options make another result when a release changes a default (as when auto
    # on a GPU began to recorrupt): a resumed batch redoes what the old defaults made.
    from napari_dip.engine import presets

    data = _folder(tmp_path, 2)
    out = tmp_path / "out"
    options = {**FIT, "preset": "auto"}
    assert [r["status"] for r in restore_files(data, task="denoise", out=out, workers=0, progress=False,
                                               **options)] == ["done"] * 2
    assert [r["status"] for r in restore_files(data, task="denoise", out=out, workers=0, progress=False,
                                               **options)] == ["skipped"] * 2
    # A default of the network auto picks on another device (here: the paper network on
    # CUDA) is not this batch's: nothing redone.
    monkeypatch.setitem(presets.RECORRUPTION_ADAM_BETA2, "paper", 0.9)
    assert [r["status"] for r in restore_files(data, task="denoise", out=out, workers=0, progress=False,
                                               **options)] == ["skipped"] * 2
    monkeypatch.setitem(presets.RECORRUPT_BY_DEFAULT, "auto", False)
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **options)
    assert [r["status"] for r in rows] == ["done"] * 2
    assert read_provenance(out / "img0.png")["fit"]["recorrupt_sigma"] is None  # made the new way
    # Nor is a default of another preset.
    fast = {**options, "preset": "fast"}
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fast)
    assert [r["status"] for r in rows] == ["done"] * 2
    monkeypatch.setitem(presets.RECORRUPTION_ADAM_BETA2, "paper", 0.8)
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fast)
    assert [r["status"] for r in rows] == ["skipped"] * 2
    monkeypatch.setitem(presets.RECORRUPTION_ADAM_BETA2, "fast", 0.9)
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fast)
    assert [r["status"] for r in rows] == ["done"] * 2
    assert read_provenance(out / "img0.png")["fit"]["adam_beta2"] == 0.9
    # A bound of a rule that depends on the noise level, which this image may not reach.
    monkeypatch.setattr(presets, "RECORRUPTION_ALPHA_RANGE", (1.5, 2.5))
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **fast)
    assert [r["status"] for r in rows] == ["done"] * 2


def test_results_made_under_other_thresholds_are_redone(tmp_path, monkeypatch):
    # Constants beyond the preset decide results too (the noise model's thresholds, the
    # tiles' edge weights, how inputs are scaled): a release that changes one redoes a
    # resumed batch's results; one that only shapes the progress bar's estimate does not,
    # nor does a denoising threshold redo another task's results.
    from napari_dip import arrays, noise
    from napari_dip.engine import stopping, tiling

    data = _folder(tmp_path, 2)
    out, sr_out = tmp_path / "out", tmp_path / "sr"

    def statuses(task, where):
        return [r["status"] for r in restore_files(data, task=task, out=where, workers=0, progress=False, **FIT)]

    assert statuses("denoise", out) == ["done"] * 2
    assert statuses("super-resolve", sr_out) == ["done"] * 2
    monkeypatch.setattr(stopping, "PROJECTION_CHECKS", 5)
    assert statuses("denoise", out) == ["skipped"] * 2
    monkeypatch.setattr(noise, "AUTO_VARIANCE_RATIO", 2.5)
    assert statuses("denoise", out) == ["done"] * 2
    assert statuses("super-resolve", sr_out) == ["skipped"] * 2
    for module, name, value in ((tiling, "EDGE_WEIGHT", 1e-3), (arrays, "HEADROOM", 0.2)):
        monkeypatch.setattr(module, name, value)
        assert statuses("denoise", out) == ["done"] * 2, name
    assert statuses("denoise", out) == ["skipped"] * 2


def test_bad_files_are_reported_and_the_others_done(tmp_path, capsys):
    data = _folder(tmp_path, 2)
    (data / "broken.png").write_bytes(b"not a png at all")
    iio.imwrite(data / "tiny.png", _noisy(9, size=8))  # below the smallest side the network takes
    out = tmp_path / "out"
    status = main(["batch", str(data), "--task", "denoise", "--out", str(out), "--workers", "0", *FIT_ARGS])
    assert status == 1
    rows = {Path(r["input"]).name: r for r in _report(out)}
    assert {name: r["status"] for name, r in rows.items()} == {
        "broken.png": "failed", "img0.png": "done", "img1.png": "done", "tiny.png": "failed"}
    assert "cannot be read" in rows["broken.png"]["error"]
    assert "at least 16 pixels" in rows["tiny.png"]["error"]
    assert not (out / "broken.png").exists() and not (out / "tiny.png.json").exists()
    # The report names an output only where there is one.
    assert rows["broken.png"]["output"] == rows["tiny.png"]["output"] == ""
    assert rows["img0.png"]["output"] == str(out / "img0.png")
    err = capsys.readouterr().err
    assert "failed: " in err and "broken.png" in err
    page = (out / "report.html").read_text()
    # Before and after thumbnails of the two done, the input's only of tiny.png, none of broken.png.
    assert page.count("data:image/png;base64,") == 5
    assert "budget" in page and "at least 16 pixels" in page
    # All done now (the bad files removed): status 0, nothing redone.
    (data / "broken.png").unlink()
    (data / "tiny.png").unlink()
    assert main(["batch", str(data), "--task", "denoise", "--out", str(out), "--workers", "0", *FIT_ARGS]) == 0
    assert [r["status"] for r in _report(out)] == ["skipped", "skipped"]


def test_inpainting_finds_each_mask_by_name(tmp_path):
    data = _folder(tmp_path, 3)
    holes = np.zeros((32, 32), np.uint8)
    holes[8:14, 8:14] = 255
    iio.imwrite(data / "img0_mask.png", holes)
    iio.imwrite(data / "img1_mask.png", np.zeros((16, 16), np.uint8))  # the wrong size
    out = tmp_path / "out"
    rows = restore_files(data, task="inpaint", out=out, mask_pattern="{stem}_mask.png", workers=0, progress=False,
                         **FIT)
    by_name = {Path(r["input"]).name: r for r in rows}
    assert set(by_name) == {"img0.png", "img1.png", "img2.png"}  # masks are not restored themselves
    assert by_name["img0.png"]["status"] == "done"
    assert by_name["img1.png"]["status"] == "failed" and "mask" in by_name["img1.png"]["error"]
    assert by_name["img2.png"]["status"] == "failed" and "no mask" in by_name["img2.png"]["error"]
    record = json.loads((out / "img0.png.json").read_text())
    assert record["mask"]["sha256"] == file_sha256(data / "img0_mask.png")
    result, original = iio.imread(out / "img0.png"), iio.imread(data / "img0.png")
    assert np.array_equal(result[holes == 0], original[holes == 0])  # known pixels kept
    # A changed mask makes the result out of date.
    holes[20:24, 20:24] = 255
    iio.imwrite(data / "img0_mask.png", holes)
    rows = restore_files(data, task="inpaint", out=out, mask_pattern="{stem}_mask.png", workers=0, progress=False,
                         **FIT)
    assert rows[0]["status"] == "done"


def test_an_interrupted_batch_is_finished_by_a_rerun(tmp_path):
    """What an interruption leaves (results with records, a result without its record, a
    temporary file) -> the rerun does only the missing ones and cleans up."""
    data = _folder(tmp_path, 5)
    out = tmp_path / "out"
    restore_files([data / "img0.png", data / "img1.png"], task="denoise", out=out, workers=0, progress=False, **FIT)
    restore_files([data / "img2.png"], task="denoise", out=out, workers=0, progress=False, **FIT)
    (out / "img2.png.json").unlink()  # killed between writing the result and its record
    (out / f"{PARTIAL_PREFIX}0123-img3.png").write_bytes(b"half a png")  # killed while writing
    kept = {name: state for name, state in _state(out).items() if name.startswith(("img0", "img1"))}
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **FIT)
    assert [r["status"] for r in rows] == ["skipped", "skipped", "done", "done", "done"]
    assert {name: state for name, state in _state(out).items() if name.startswith(("img0", "img1"))} == kept
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"img{i}.png" for i in range(5)] + [f"img{i}.png.json" for i in range(5)] + ["report.csv", "report.html"])


def test_ctrl_c_then_rerun_does_only_the_missing_files(tmp_path):
    data = _folder(tmp_path, 4)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_dip.cli", "batch", str(data), "--task", "denoise", "--out", str(out),
               "--workers", "0", "--preset", "fast", "--channels", "8", "--iterations", "60", "--stop", "none",
               "--device", "cpu", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=takes_ctrl_c)
    deadline = time.monotonic() + 120
    while not (out / "img0.png.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "run the same command again" in err
    done = sorted(p.name for p in out.glob("img*.png.json"))
    assert 1 <= len(done) < 4
    assert not list(out.glob(f"*{PARTIAL_PREFIX}*"))
    kept = {name: state for name, state in _state(out).items() if name.removesuffix(".json") in done}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    statuses = [r["status"] for r in _report(out)]
    assert statuses.count("skipped") == len(done) and statuses.count("done") == 4 - len(done)
    assert {name: state for name, state in _state(out).items() if name.removesuffix(".json") in done} == kept


def test_local_cluster_finishes_every_file_once_when_a_worker_dies(tmp_path):
    distributed = pytest.importorskip("distributed")
    data = _folder(tmp_path, 6)
    out = tmp_path / "out"
    fit = {**FIT, "iterations": 60, "stop": "none"}  # long enough that the kill lands mid-fit
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        result = {}

        def batch():
            result["rows"] = restore_files(data, task="denoise", out=out, client=client, progress=False, **fit)

        runner = threading.Thread(target=batch)
        runner.start()
        killed = victim = None
        deadline = time.monotonic() + 120
        def written(image):
            return (out / image).exists() or (out / f"{image}.json").exists()

        while killed is None and time.monotonic() < deadline:
            # The key names the image (napari-dip-img3.png-1a2b). The scheduler may still list
            # a fit whose worker has just written its result: only an image with nothing
            # written yet is taken as mid-fit (a CI run once killed a worker that had
            # finished its image, and the record rightly named the killed process).
            busy = [(address, key.split("-")[2]) for address, keys in client.processing().items() for key in keys
                    if address in pids and not written(key.split("-")[2])]
            if busy and any(out.glob("*.json")):  # one result written, others mid-fit: kill a busy worker
                address, image = busy[0]
                os.kill(pids[address], signal.SIGKILL)
                gone = time.monotonic() + 10
                while time.monotonic() < gone:  # a killed process writes nothing more
                    try:
                        os.kill(pids[address], 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
                if not written(image):  # it died mid-fit; otherwise it finished first: kill the other
                    killed, victim = address, image
                pids = {a: pid for a, pid in pids.items() if a != address} if killed is None else pids
            time.sleep(0.02)
        runner.join(timeout=300)
        assert killed is not None and not runner.is_alive()
    rows = result["rows"]
    assert sorted(r["status"] for r in rows) == ["done"] * 6, rows
    for i in range(6):
        record = json.loads((out / f"img{i}.png.json").read_text())
        assert record["output"]["sha256"] == file_sha256(out / f"img{i}.png")  # whole, and the one recorded
        assert record["iterations"] == 60
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"img{i}.png" for i in range(6)] + [f"img{i}.png.json" for i in range(6)] + ["report.csv", "report.html"])
    # The image the killed worker was fitting was done again, by another process.
    assert json.loads((out / f"{victim}.json").read_text())["process"] != pids[killed]


def test_a_task_run_again_after_its_worker_died_reports_done_and_redoes_nothing(tmp_path):
    # What Dask does when a worker dies holding a finished task's result: it runs the task
    # again elsewhere. The result is on disk from this batch: "done", not redone, even with
    # --force; a later batch calls the same result "skipped" (or redoes it with --force).
    from napari_dip.batch.job import restore_one
    from napari_dip.batch.run import fit_defaults

    (item,) = plan_items([_folder(tmp_path, 1)], tmp_path / "out", "denoise")
    (tmp_path / "out").mkdir()
    options = {**fit_defaults("denoise"), **FIT}
    first = restore_one(item, "denoise", options, batch="b1")
    assert first["status"] == "done"
    assert json.loads(item.sidecar.read_text())["batch"] == "b1"
    before = _state(tmp_path / "out")
    for force in (False, True):
        assert restore_one(item, "denoise", options, force=force, batch="b1")["status"] == "done"
        assert _state(tmp_path / "out") == before
    assert restore_one(item, "denoise", options, batch="b2")["status"] == "skipped"
    assert _state(tmp_path / "out") == before
    assert restore_one(item, "denoise", options, force=True, batch="b2")["status"] == "done"
    assert json.loads(item.sidecar.read_text())["batch"] == "b2"


def test_each_input_is_read_for_its_hash_once_per_fit(tmp_path, monkeypatch):
    # A new file is hashed once (for its record), not also to ask whether it is done; a
    # file whose settings changed once before its refit, not twice more.
    from napari_dip.batch import job

    data = _folder(tmp_path, 1)
    source = data / "img0.png"
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return file_sha256(path, *args, **kwargs)

    monkeypatch.setattr(job, "file_sha256", counting)
    out = tmp_path / "out"
    restore_files(data, task="denoise", out=out, workers=0, progress=False, **FIT)
    assert calls.count(source) == 1
    calls.clear()
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **FIT)
    assert rows[0]["status"] == "skipped" and calls.count(source) == 1
    calls.clear()
    rows = restore_files(data, task="denoise", out=out, workers=0, progress=False, **{**FIT, "iterations": 3})
    assert rows[0]["status"] == "done" and calls.count(source) == 2  # the client's check and the fit's
