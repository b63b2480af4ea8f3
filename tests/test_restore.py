import warnings

import numpy as np
import pytest

from napari_dip import denoise, inpaint, iter_restore, super_resolve
from napari_dip.errors import InputError, InputWarning
from napari_dip.restore import estimate_noise, last_snapshot
from tiny import TINY, smooth_image


def noisy_uint8(size=32, seed=0):
    rng = np.random.default_rng(seed)
    clean = smooth_image(size)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    return clean, (noisy * 255).round().astype(np.uint8)


def test_denoise_returns_input_dtype_and_removes_noise():
    clean, noisy = noisy_uint8(48)
    result = denoise(noisy, iterations=150, learning_rate=0.02, **TINY)
    assert result.dtype == np.uint8 and result.shape == noisy.shape

    def error(image):
        return np.mean((image / 255.0 - clean) ** 2)

    assert error(result) < 0.6 * error(noisy)


def test_denoise_multichannel_uint16_keeps_range():
    image = (smooth_image(32, channels=2) * 3000 + 500).astype(np.uint16)
    image = np.moveaxis(image, -1, 0)
    result = denoise(image, iterations=5, channel_axis=0, **TINY)
    assert result.shape == (2, 32, 32) and result.dtype == np.uint16
    assert result.min() >= image.min() and result.max() <= image.max()


def test_super_resolve_scales_the_shape():
    image = (smooth_image(16, channels=3) * 255).astype(np.uint8)
    result = super_resolve(image, 2, iterations=5, **TINY)
    assert result.shape == (32, 32, 3) and result.dtype == np.uint8


def test_super_resolve_rgba_upscales_alpha():
    image = np.concatenate([(smooth_image(16, channels=3) * 255), np.full((16, 16, 1), 200.0)], axis=-1)
    result = super_resolve(image.astype(np.uint8), 2, iterations=3, **TINY)
    assert result.shape == (32, 32, 4)
    assert (result[..., 3] == 200).all()


def test_inpaint_keeps_known_pixels_close_and_fills_holes():
    clean = smooth_image(32)
    holes = np.zeros(clean.shape, bool)
    holes[12:20, 12:20] = True
    damaged = clean.copy()
    damaged[holes] = 0
    result = inpaint(damaged, holes, iterations=200, learning_rate=0.02, **TINY)
    hole_error = np.abs(result[holes] - clean[holes]).mean()
    assert hole_error < 0.5 * np.abs(damaged[holes] - clean[holes]).mean()


def test_streaming_gives_user_layout_and_settings_at_the_end():
    _, noisy = noisy_uint8(32)
    snaps = list(iter_restore("denoise", noisy, iterations=9, snapshot_every=3, seed=7, **TINY))
    assert [s.iteration for s in snaps] == [3, 6, 9]
    assert snaps[0].average.dtype == np.uint8
    # the first snapshot says how the fit is made (for a run stopped early), later ones don't repeat it
    assert snaps[0].settings["fit"]["seed"] == 7 and snaps[1].settings == {}
    settings = snaps[-1].settings
    assert settings["task"] == "denoise" and settings["fit"]["seed"] == 7
    assert settings["input"]["dtype"] == "uint8" and "napari_dip" in settings


def test_the_stream_says_how_it_will_run_and_acts_as_the_generator_it_wraps():
    _, noisy = noisy_uint8(32)
    stream = iter_restore("denoise", noisy, iterations=40, snapshot_every=5, **TINY)
    assert stream.settings["task"] == "denoise" and stream.recorrupts is True
    stream.settings["task"] = "changed by the caller"  # a copy: the records keep theirs
    assert next(stream).settings["task"] == "denoise"

    def relay():  # a consumer that delegates (a napari worker does)
        yield from stream

    consumer = relay()
    next(consumer)
    with pytest.raises(KeyboardInterrupt):  # reaches the fit, which ends
        consumer.throw(KeyboardInterrupt)
    with pytest.raises(StopIteration):
        next(stream)
    closed = iter_restore("denoise", noisy, iterations=40, snapshot_every=5, **TINY)
    next(closed)
    closed.close()  # cancels the fit, as closing the generator did
    with pytest.raises(StopIteration):
        next(closed)


def test_seed_none_is_recorded():
    _, noisy = noisy_uint8(32)
    final = list(iter_restore("denoise", noisy, iterations=2, seed=None, snapshot_every=None, **TINY))[-1]
    assert isinstance(final.settings["fit"]["seed"], int)


def test_input_array_is_not_modified():
    _, noisy = noisy_uint8(32)
    holes = np.zeros(noisy.shape, bool)
    holes[:4] = True
    before, mask_before = noisy.copy(), holes.copy()
    inpaint(noisy, holes, iterations=2, **TINY)
    np.testing.assert_array_equal(noisy, before)
    np.testing.assert_array_equal(holes, mask_before)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda im: iter_restore("deblur", im), "unknown task"),
        (lambda im: iter_restore("denoise", im, mask=im), "only used for inpainting"),
        (lambda im: iter_restore("inpaint", im), "needs a mask"),
        (lambda im: iter_restore("super-resolve", im), "needs a factor"),
        (lambda im: super_resolve(im, 5), "factor"),
        (lambda im: denoise(im, preset="huge"), "unknown preset"),
        (lambda im: denoise(im, channels=0), "channels"),
        (lambda im: denoise(im[:10]), "at least"),
        (lambda im: inpaint(im, np.zeros((3, 3))), "mask has shape"),
    ],
)
def test_bad_calls_are_explained(call, message):
    _, noisy = noisy_uint8(32)
    with pytest.raises(InputError, match=message):
        call(noisy)


def test_denoising_jitter_follows_the_estimated_noise():
    rng = np.random.default_rng(3)
    clean = smooth_image(48)
    heavy = np.clip(clean + rng.normal(0, 0.15, clean.shape), 0, 1).astype(np.float32)

    def fit_settings(image, **kwargs):
        kwargs.setdefault("recorrupt", False)  # the paper's way, which jitters its input
        final = last_snapshot(iter_restore("denoise", image, iterations=2, snapshot_every=None, **TINY, **kwargs))
        return final.settings

    quiet = fit_settings(clean)
    noisy = fit_settings(heavy)
    # By default (fast on a CPU) the estimate is the recorruption's level instead: no jitter.
    recorrupted = fit_settings(heavy, recorrupt=None)
    assert recorrupted["fit"]["recorrupt_sigma"] == pytest.approx(recorrupted["noise_sigma_estimate"])
    assert recorrupted["fit"]["reg_noise_std"] == 0.0
    assert quiet["noise_sigma_estimate"] < 0.02 < 0.1 < noisy["noise_sigma_estimate"]
    assert quiet["fit"]["reg_noise_std"] == pytest.approx(1 / 30)  # the paper's value at low noise
    assert noisy["fit"]["reg_noise_std"] == pytest.approx(noisy["noise_sigma_estimate"] / 3, rel=1e-6)
    # the caller's value wins, and other tasks keep their schedule whatever the noise
    assert fit_settings(heavy, reg_noise_std=0.01, recorrupt=None)["fit"]["reg_noise_std"] == 0.01
    sr = last_snapshot(iter_restore("super-resolve", heavy, factor=2, iterations=2, snapshot_every=None, **TINY))
    assert sr.settings["fit"]["reg_noise_std"] == pytest.approx(0.03)


# -- issue 8: what a new user ran into -------------------------------------------------


def square_holes():
    holes = np.zeros((32, 32), bool)
    holes[10:18, 12:22] = True
    return holes


@pytest.mark.parametrize("layout", ["grey", "rgb per channel", "rgba", "channel-first uint16", "float"])
def test_inpainting_keeps_the_known_pixels_exactly(layout):
    rng = np.random.default_rng(1)
    holes = square_holes()
    if layout == "grey":
        image, mask, hole_values = noisy_uint8(32)[1], holes, holes
    elif layout == "rgb per channel":
        image = (smooth_image(32, channels=3) * 255).astype(np.uint8)
        mask = np.stack([holes, np.roll(holes, 5, axis=1), np.zeros_like(holes)], axis=-1)
        mask[0, 0, 2] = True
        hole_values = mask
    elif layout == "rgba":
        rgb = smooth_image(32, channels=3) * 255
        image = np.dstack([rgb, rng.integers(0, 256, (32, 32))]).astype(np.uint8)
        mask, hole_values = holes, np.dstack([holes] * 3 + [np.zeros_like(holes)])  # alpha: never a hole
    elif layout == "channel-first uint16":
        image = np.moveaxis((smooth_image(32, channels=2) * 3000 + 700).astype(np.uint16), -1, 0)
        mask, hole_values = holes, np.stack([holes, holes])
    else:
        image = (smooth_image(32) * 5.0 - 1.3).astype(np.float32)  # scaled by its own range
        mask, hole_values = holes, holes
    channels = {"channel_axis": 0} if layout == "channel-first uint16" else {}
    snaps = list(iter_restore("inpaint", image, mask=mask, iterations=4, snapshot_every=2, **channels, **TINY))
    for snap in snaps:
        for result in (snap.average, snap.output):
            assert result.dtype == image.dtype and result.shape == image.shape
            np.testing.assert_array_equal(result[~hole_values], image[~hole_values])
    assert snaps[-1].settings["keep_known"] is True


def test_raw_output_returns_the_networks_whole_image():
    _, noisy = noisy_uint8(32)
    holes = square_holes()
    final = last_snapshot(iter_restore("inpaint", noisy, mask=holes, keep_known=False, iterations=3,
                                       snapshot_every=None, **TINY))
    assert (final.average[~holes] != noisy[~holes]).any()  # a 3-step network reproduces nothing exactly
    assert final.settings["keep_known"] is False
    kept = inpaint(noisy, holes, iterations=3, **TINY)
    np.testing.assert_array_equal(kept[holes], final.average[holes])  # same fit, same holes


def test_mask_marks_known_and_the_recorded_hole_fraction():
    _, noisy = noisy_uint8(32)
    holes = square_holes()
    published = np.where(holes, 0, 255).astype(np.uint8)  # 255 = known, as the paper's masks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = last_snapshot(iter_restore("inpaint", noisy, mask=published, mask_marks="known", iterations=2,
                                           snapshot_every=None, **TINY))
    assert final.settings["mask_marks"] == "known"
    assert final.settings["hole_fraction"] == pytest.approx(holes.mean(), abs=1e-6)
    np.testing.assert_array_equal(final.average, inpaint(noisy, holes, iterations=2, **TINY))


def test_an_inverted_mask_is_used_with_a_warning():
    _, noisy = noisy_uint8(32)
    holes = square_holes()
    published = np.where(holes, 0, 255).astype(np.uint8)
    with pytest.warns(InputWarning, match="probably inverted; pass --mask-known / mask_marks='known'"):
        snaps = iter_restore("inpaint", noisy, mask=published, iterations=2, snapshot_every=None, **TINY)
    assert last_snapshot(snaps).settings["hole_fraction"] == pytest.approx(1 - holes.mean(), abs=1e-6)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.full((32, 32), 128, np.uint8), "every value is 128"),
        (np.full((32, 32), 4000, np.uint16), "every value is 4000"),
    ],
)
@pytest.mark.parametrize("task", ["denoise", "super-resolve", "inpaint"])
def test_a_constant_image_is_refused_without_numpy_warnings(image, message, task):
    options = {"factor": 2} if task == "super-resolve" else {}
    if task == "inpaint":
        options["mask"] = square_holes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=rf"the image is constant \({message}\): there is nothing to restore"):
            iter_restore(task, image, **options, **TINY)


def test_a_constant_channel_next_to_varying_ones_restores_without_warnings():
    _, noisy = noisy_uint8(32)
    image = np.stack([np.full((32, 32), 4000), noisy.astype(np.uint16) * 10 + 100]).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = last_snapshot(iter_restore("denoise", image, iterations=3, snapshot_every=None, channel_axis=0, **TINY))
    assert (final.average[0] == 4000).all()
    assert 0 < final.settings["noise_sigma_estimate"] < 1
    assert np.isfinite(final.settings["fit"]["reg_noise_std"])


def test_noise_estimate_of_a_constant_channel_is_zero_not_nan():
    chw = np.zeros((2, 32, 32), np.float32)  # a blank channel (0 after scaling), then noise
    chw[1] = np.random.default_rng(0).normal(0.5, 0.1, (32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may escape (a channel without detail)
        sigma = estimate_noise(chw)
    assert sigma == pytest.approx(estimate_noise(chw[1:]) / 2)  # averaged with a noise-free channel


@pytest.mark.parametrize("case", ["grey", "rgb", "flat patches", "odd size", "8-bit", "float32"])
def test_noise_estimate_equals_scikit_images(case):
    """The engine measures noise with PyWavelets directly (no scipy.stats import); it must
    give scikit-image's estimate_sigma averaged over channels, to rounding."""
    from skimage import data, img_as_float
    from skimage.restoration import estimate_sigma

    rng = np.random.default_rng(3)
    if case == "rgb":
        chw = np.moveaxis(img_as_float(data.astronaut())[100:228, 100:228], -1, 0)
        chw = chw + rng.normal(0, [[[0.02]], [[0.05]], [[0.1]]], chw.shape)
    else:
        chw = img_as_float(data.camera())[None, 200:328, 150:278] + rng.normal(0, 0.07, (1, 128, 128))
    if case == "flat patches":  # a blank corner: exactly zero details, left out by both
        chw[:, :64, :64] = 0
    if case == "odd size":
        chw = chw[:, :101, :77]
    if case == "8-bit":
        chw = np.round(np.clip(chw, 0, 1) * 255) / 255
    if case == "float32":  # estimated in float64, as scikit-image computes a float64 image
        chw = chw.astype(np.float32)
    expected = float(np.mean(estimate_sigma(chw.astype(np.float64), channel_axis=0, average_sigmas=False)))
    assert estimate_noise(chw) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.01


def test_a_fit_does_not_import_scipy_stats():
    """What a command or the widget's first Run imports before its first picture: not
    scipy.stats (almost a second on a 2-core CPU), which scikit-image's estimate_sigma
    pulls in."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from napari_dip import iter_restore\n"
        "image = np.random.default_rng(0).random((32, 32))\n"
        "next(iter(iter_restore('denoise', image, iterations=2, snapshot_every=1, channels=4, device='cpu')))\n"
        "print('scipy.stats' in sys.modules, 'skimage.restoration._denoise' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_only_a_calls_first_fit_counts_its_first_picture_from_the_call(monkeypatch):
    """The call's start reaches the first fit it makes (single image, first plane of a
    stack, first tile, first volume) and no later one, which counts from its own start
    (``Fitter.run(..., since=...)``; the timing itself is tested in test_fit.py)."""
    import time

    from napari_dip.engine.fit import Fitter
    from napari_dip.restore import iter_restore_planes
    from napari_dip.volumes import iter_restore_volumes

    handed = []
    run = Fitter.run

    def recording_run(self, snapshot_every=100, snapshot_seconds=None, since=None):
        handed.append(since)
        return run(self, snapshot_every, snapshot_seconds, since)

    monkeypatch.setattr(Fitter, "run", recording_run)
    _, noisy = noisy_uint8(32)
    settings = {"iterations": 2, "snapshot_every": None, "snapshot_seconds": 2.0, **TINY}

    def fits_of(calls):
        handed.clear()
        before = time.perf_counter()
        list(calls())
        assert handed and handed[0] is not None and handed[0] >= before
        return [since is None for since in handed]

    assert fits_of(lambda: iter_restore("denoise", noisy, **settings)) == [False]
    stack = np.stack([noisy, noisy[::-1], noisy.T])
    assert fits_of(lambda: iter_restore_planes("denoise", stack, axes="ZYX", **settings)) == [False, True, True]
    big = np.tile(noisy, (2, 2))  # 64x64 in 32-pixel tiles
    assert fits_of(lambda: iter_restore("denoise", big, tile_size=32, tile_overlap=8, **settings)) == [False] + [True] * 8
    volumes = np.stack([stack, stack[::-1]])
    assert fits_of(lambda: iter_restore_volumes("denoise", volumes, axes="TZYX", **settings)) == [False, True]


def test_the_auto_preset_is_the_default_and_is_recorded(monkeypatch):
    _, noisy = noisy_uint8(32)
    final = last_snapshot(iter_restore("denoise", noisy, iterations=2, snapshot_every=None, **TINY))
    assert final.settings["preset"] == "fast" and final.settings["preset_requested"] == "auto"  # on a CPU
    explicit = last_snapshot(iter_restore("denoise", noisy, preset="paper", iterations=2, snapshot_every=None, **TINY))
    assert explicit.settings["preset"] == "paper" and explicit.settings["preset_requested"] == "paper"
    # On a machine whose device resolves to a GPU, auto means the paper's network.
    import torch

    from napari_dip.engine import presets

    monkeypatch.setattr(presets, "resolve_device", lambda name="auto": torch.device("cuda", 0))
    pretend = last_snapshot(iter_restore("denoise", noisy, iterations=2, snapshot_every=None, **TINY))
    assert pretend.settings["preset"] == "paper" and pretend.settings["preset_requested"] == "auto"


def test_threads_reach_the_fit_and_are_recorded():
    from napari_dip.restore import iter_restore, last_snapshot

    final = last_snapshot(iter_restore("denoise", smooth_image(32), iterations=2, threads=1, snapshot_every=None, **TINY))
    assert final.settings["threads"] == 1
    assert final.settings["fit"]["threads"] == 1
