"""Stacks (Z, T) in the numpy API: plane by plane, one value range, warm start (issue 10)."""

import warnings

import numpy as np
import pytest
import torch

from napari_dip import denoise, inpaint, iter_restore, super_resolve
from napari_dip import restore
from napari_dip.arrays import value_range
from napari_dip.errors import InputError, InputWarning
from napari_dip.restore import iter_restore_planes
from tiny import TINY, diverging_at, smooth_image

FEW = {"iterations": 3, "stopping": "none", **TINY}


def uint16_stack(planes=3, size=32, channels=None):
    """A small uint16 stack whose planes differ in brightness (as a Z-stack's do)."""
    stack = [smooth_image(size, channels=channels, seed=i) * (1000 + 500 * i) + 100 for i in range(planes)]
    return np.stack(stack).astype(np.uint16)


def finals(stream):
    return {index: snap for index, snap in stream if snap.done}


class RecordingFitter(restore.Fitter):
    """A Fitter that keeps its starting weights and the state it was given."""

    made = []

    def __init__(self, *args, initial_state=None, **kwargs):
        super().__init__(*args, initial_state=initial_state, **kwargs)
        self.start = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.initial_state = initial_state
        RecordingFitter.made.append(self)


@pytest.fixture
def fitters(monkeypatch):
    RecordingFitter.made = []
    monkeypatch.setattr(restore, "Fitter", RecordingFitter)
    return RecordingFitter.made


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_denoise_a_zyx_stack_returns_its_shape_dtype_and_range(fitters):
    stack = uint16_stack()
    result = denoise(stack, axes="ZYX", **FEW)
    assert result.shape == stack.shape and result.dtype == np.uint16
    assert result.min() >= stack.min() and result.max() <= stack.max()
    # every plane is fitted on the stack's scale, not stretched to its own range
    (low,), (high,) = value_range(stack)  # the stack's percentiles, with head-room
    span = high - low
    for z, fitter in enumerate(fitters):
        np.testing.assert_allclose(fitter.observation[0, 0].numpy(), (stack[z] - low) / span, atol=1e-6)


@pytest.mark.parametrize(
    "shape,axes",
    [((2, 32, 32), "TYX"), ((1, 2, 2, 32, 32), "TCZYX"), ((2, 32, 32, 3), "ZYXC"), ((2, 32, 32, 3), "TYXS")],
)
def test_stacks_of_other_layouts(shape, axes):
    image = (np.random.default_rng(0).random(shape) * 200 + 20).astype(np.uint8)
    result = denoise(image, axes=axes, iterations=2, **TINY)
    assert result.shape == shape and result.dtype == np.uint8


def test_super_resolve_a_stack_enlarges_y_and_x():
    stack = uint16_stack(2, 16)
    result = super_resolve(stack, 2, axes="ZYX", **FEW)
    assert result.shape == (2, 32, 32) and result.dtype == np.uint16


def test_an_ambiguous_stack_is_refused_with_an_example():
    stack = uint16_stack(5)
    with pytest.raises(InputError, match=r'\(5, 32, 32\).*5 planes or 5 channels.*axes="ZYX".*axes="CYX"'):
        denoise(stack, **FEW)
    with pytest.raises(InputError, match="iter_restore_planes"):
        iter_restore("denoise", stack, axes="ZYX", **FEW)
    # the same array said to be channels is one multichannel image, as before
    assert denoise(stack, axes="CYX", **FEW).shape == stack.shape


def test_a_stack_of_one_plane_through_iter_restore_keeps_its_shape():
    stack = uint16_stack(1)
    snaps = list(iter_restore("denoise", stack, axes="ZYX", snapshot_every=None, **FEW))
    assert snaps[-1].average.shape == (1, 32, 32) and snaps[-1].settings["input"]["axes"] == "ZYX"


def test_planes_stream_in_c_order_with_their_settings(fitters):
    stack = uint16_stack(2).reshape(1, 2, 32, 32)
    stream = iter_restore_planes("denoise", stack, axes="TZYX", snapshot_every=1, **FEW)
    pairs = list(stream)
    assert [index for index, _ in pairs] == [(0, 0)] * 3 + [(0, 1)] * 3
    assert all(snap.average.shape == (32, 32) for _, snap in pairs)
    last = pairs[-1][1].settings
    assert last["plane"] == {"index": [0, 1], "axes": "TZ", "number": 1, "count": 2}
    assert last["input"]["axes"] == "TZYX" and last["input"]["shape"] == [1, 2, 32, 32]
    assert last["input"]["value_range"] == [list(v) for v in value_range(stack)]
    assert pairs[3][1].settings["warm_start"] == last["warm_start"]  # the first snapshot says it too


def test_warm_start_carries_the_previous_planes_network(fitters):
    stack = uint16_stack(3)
    # The paper's way, whose input is noise that the next plane keeps (a recorrupted fit's
    # input is each plane's own image: test_recorrupt.py).
    plane_finals = finals(iter_restore_planes("denoise", stack, axes="ZYX", iterations=6, recorrupt=False, **TINY))
    first, second, third = fitters
    assert first.initial_state is None
    # the second plane starts from the first plane's fitted weights and input...
    assert same_weights(second.start, first.network.state_dict())
    assert torch.equal(second.input, first.input)
    assert not same_weights(first.start, first.network.state_dict())
    # ...at half the learning rate, with its own stopping rule and no warm-up
    assert second.config.learning_rate == pytest.approx(first.config.learning_rate / 2)
    assert second.config.stopping.warmup == 0 and second.stopper is not None
    assert same_weights(third.start, second.network.state_dict())
    assert [plane_finals[(k,)].settings["warm_start"] for k in range(3)] == [
        None, {"from": [0], "from_plane": 0}, {"from": [1], "from_plane": 1}
    ]
    assert plane_finals[(1,)].settings["fit"]["learning_rate"] == pytest.approx(second.config.learning_rate)


def drifting_camera(offsets, size=32):
    """Crops of the camera photograph moved down and right by ``offsets`` pixels."""
    from skimage import data

    camera = data.camera()
    return np.stack([camera[200 + k : 200 + k + size, 200 + k : 200 + k + size] for k in offsets])


def test_a_plane_drifted_from_the_chains_start_is_fitted_afresh(fitters):
    # x2: plane offsets 0, 1, 2, 3 px are 0, 2, 4, 6 px of the result. The chain begun on
    # plane 0 takes plane 1 (2 px); plane 2 (4 px) starts afresh and a chain begins there,
    # so plane 3 is 2 px from its start and warm again, from plane 2.
    stack = drifting_camera([0, 1, 2, 3])
    plane_finals = finals(iter_restore_planes("super-resolve", stack, axes="TYX", factor=2, **FEW))
    first, second, third, fourth = fitters
    assert second.initial_state is not None and fourth.initial_state is not None
    assert third.initial_state is None and third.config == first.config  # a whole fit from scratch
    assert not same_weights(third.start, second.network.state_dict())
    assert same_weights(fourth.start, third.network.state_dict())
    settings = [plane_finals[(k,)].settings for k in range(4)]
    assert [s["warm_start"] for s in settings] == [
        None, {"from": [0], "from_plane": 0}, None, {"from": [2], "from_plane": 2}]
    assert [s.get("warm_start_restarted", False) for s in settings] == [False, False, True, False]
    assert "drift" not in settings[0]
    assert [s["drift"]["from_plane"] for s in settings[1:]] == [0, 0, 2]
    assert [s["drift"]["pixels"] for s in settings[1:]] == pytest.approx([2, 4, 2], abs=0.3)
    assert all(s["drift"]["match"] > 0.9 for s in settings[1:])


def test_different_pictures_are_no_drift_and_recorrupted_planes_are_not_measured(fitters):
    from skimage import data

    # Unrelated planes (a Z-stack through changing structures), lit by the same gradient
    # of light: the registration reports shifts of 4-14 px, but their detail does not
    # match once aligned, so the chain goes on.
    ramp = np.linspace(0, 1, 32)[None].repeat(32, 0)
    pictures = [data.camera()[200:232, 200:232], data.coins()[100:132, 100:132], data.moon()[300:332, 100:132]]
    stack = np.stack([np.round(0.5 * 255 * ramp + 0.5 * p).astype(np.uint8) for p in pictures])
    plane_finals = finals(iter_restore_planes("denoise", stack, axes="ZYX", recorrupt=False, **FEW))
    assert all(f.initial_state is not None for f in fitters[1:])
    drifts = [plane_finals[(k,)].settings["drift"] for k in (1, 2)]
    assert all(d["pixels"] > 3 and d["match"] < 0.5 for d in drifts), drifts
    assert not any(plane_finals[(k,)].settings.get("warm_start_restarted") for k in range(3))
    # A recorrupted fit's input is the plane itself, so it moves with the picture: no drift to measure.
    fitters.clear()
    plane_finals = finals(iter_restore_planes("denoise", drifting_camera([0, 4, 8]), axes="TYX", recorrupt=True, **FEW))
    assert all(f.initial_state is not None for f in fitters[1:])
    assert not any("drift" in plane_finals[(k,)].settings for k in range(3))


def test_without_warm_start_every_plane_is_an_independent_fit(fitters):
    stack = uint16_stack(2)
    plane_finals = finals(iter_restore_planes("denoise", stack, axes="ZYX", warm_start=False, iterations=6, **TINY))
    first, second = fitters
    assert second.initial_state is None and second.config == first.config
    assert same_weights(second.start, first.start)  # same seed, fresh network
    assert not same_weights(second.start, first.network.state_dict())
    assert [snap.settings["warm_start"] for snap in plane_finals.values()] == [None, None]
    # the task functions pass warm_start on
    RecordingFitter.made.clear()
    denoise(stack, axes="ZYX", warm_start=False, **FEW)
    assert [f.initial_state for f in fitters] == [None, None]


def test_warm_start_budget_is_smaller_than_the_first_planes():
    stack = uint16_stack(2)
    plane_finals = finals(iter_restore_planes("denoise", stack, axes="ZYX", iterations=400, stopping="none", **TINY))
    assert plane_finals[(0,)].iteration == 400 and plane_finals[(1,)].iteration == 150


def test_a_constant_plane_inside_a_varying_stack_is_copied_through(fitters):
    stack = uint16_stack(3)
    stack[1] = 700
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plane_finals = finals(iter_restore_planes("super-resolve", stack, axes="ZYX", factor=2, **FEW))
    copied = plane_finals[(1,)]
    assert copied.stop_reason == "constant" and copied.iteration == 0 and (copied.average == 700).all()
    assert copied.average.shape == (64, 64)
    assert len(fitters) == 2 and same_weights(fitters[1].start, fitters[0].network.state_dict())
    assert plane_finals[(2,)].settings["warm_start"] == {"from": [0], "from_plane": 0}
    with pytest.raises(InputError, match="every value is 7"):
        denoise(np.full((3, 32, 32), 7, np.uint16), axes="ZYX", **FEW)


def holes_at(row, size=32):
    holes = np.zeros((size, size), bool)
    holes[row:row + 6, 10:20] = True
    return holes


def test_inpaint_a_stack_with_one_mask_for_all_planes():
    stack = uint16_stack(2)
    holes = holes_at(8)
    result = inpaint(stack, holes, axes="ZYX", **FEW)
    assert result.shape == stack.shape and result.dtype == np.uint16
    for z in range(2):
        np.testing.assert_array_equal(result[z][~holes], stack[z][~holes])


def test_inpaint_a_stack_with_a_mask_per_plane():
    stack = uint16_stack(3)
    masks = np.stack([holes_at(4), holes_at(20), np.zeros((32, 32), bool)])  # the last plane is whole
    plane_finals = finals(iter_restore_planes("inpaint", stack, axes="ZYX", mask=masks, **FEW))
    for z in range(2):
        result = plane_finals[(z,)].average
        np.testing.assert_array_equal(result[~masks[z]], stack[z][~masks[z]])
        assert plane_finals[(z,)].settings["hole_fraction"] == pytest.approx(masks[z].mean(), abs=1e-6)
    assert (plane_finals[(0,)].average[masks[1]] == stack[0][masks[1]]).all()  # plane 1's holes are not plane 0's
    untouched = plane_finals[(2,)]
    assert untouched.stop_reason == "no holes"
    np.testing.assert_array_equal(untouched.average, stack[2])


def test_stack_masks_are_checked_before_any_fit(fitters):
    stack = uint16_stack(2)
    full = np.zeros((2, 32, 32), bool)
    full[1] = True
    with pytest.raises(InputError, match="plane Z=1: the mask covers every pixel"):
        iter_restore_planes("inpaint", stack, axes="ZYX", mask=full, **FEW)
    with pytest.raises(InputError, match="no pixel to fill .* in any plane"):
        iter_restore_planes("inpaint", stack, axes="ZYX", mask=np.zeros((2, 32, 32), bool), **FEW)
    with pytest.raises(InputError, match=r"mask has shape \(3, 32, 32\)"):
        iter_restore_planes("inpaint", stack, axes="ZYX", mask=np.zeros((3, 32, 32), bool), **FEW)
    assert fitters == []


def test_an_inverted_stack_mask_warns_once():
    stack = uint16_stack(3)
    known = ~np.stack([holes_at(4), holes_at(12), holes_at(20)])  # 255 = known, passed as holes
    with pytest.warns(InputWarning, match="probably inverted") as caught:
        stream = iter_restore_planes("inpaint", stack, axes="ZYX", mask=known, **FEW)
        list(stream)
    assert len([w for w in caught if issubclass(w.category, InputWarning)]) == 1


def test_a_plane_whose_fit_diverges_is_named_in_the_error(monkeypatch):
    monkeypatch.setattr(restore, "Fitter", diverging_at(restore.Fitter, 3))
    stack = uint16_stack(planes=4)
    before = stack.copy()
    with pytest.raises(FloatingPointError, match=r"^plane 3 of 4 \(Z=2\): the fit diverged 21 times"):
        denoise(stack, axes="ZYX", warm_start=False, **FEW)
    np.testing.assert_array_equal(stack, before)


def test_a_single_image_that_diverges_keeps_the_engines_message(monkeypatch):
    monkeypatch.setattr(restore, "Fitter", diverging_at(restore.Fitter, 1))
    with pytest.raises(FloatingPointError, match=r"^the fit diverged 21 times"):
        denoise(uint16_stack(planes=1)[0], **FEW)
    # A stack of one plane has no other plane to tell it from.
    monkeypatch.setattr(restore, "Fitter", diverging_at(restore.Fitter, 1))
    with pytest.raises(FloatingPointError, match=r"^the fit diverged 21 times"):
        denoise(uint16_stack(planes=1), axes="ZYX", **FEW)
