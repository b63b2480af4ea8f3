"""Tiles for images larger than the device: the grid, the blending, and the API's tiled fits."""

import numpy as np
import pytest
from scipy import ndimage

from napari_dip import denoise, inpaint, iter_restore, super_resolve
from napari_dip.engine.forward import KnownPixels
from napari_dip.engine.tiling import (
    TileBlender,
    TileGrid,
    cut_forward_model,
    plan_tiles,
    restore_in_tiles,
    tile_starts,
    tile_weight,
)
from napari_dip.errors import InputError
from napari_dip.restore import estimate_noise
from tiny import TINY, smooth_image

WEIGHTED = {"noise": "poisson-gaussian", "noise_fit": "weighted", "tile_size": 32, "tile_overlap": 8,
            "iterations": 2, **TINY}

# (height, width, tile, overlap): odd sizes, sizes not divisible by the tile, a tile larger
# than one side, overlap 0 and overlap half the tile.
GRIDS = [(37, 53, 16, 5), (100, 64, 32, 16), (70, 20, 32, 8), (64, 96, 32, 0), (81, 81, 40, 20)]


@pytest.mark.parametrize("height, width, size, overlap", GRIDS)
def test_tiles_cover_the_image_and_overlap_at_least_as_asked(height, width, size, overlap):
    grid = TileGrid(height, width, size, overlap)
    covered = np.zeros((height, width), int)
    for tile in grid.tiles:
        assert tile.height <= size and tile.width <= size
        covered[tile.window()] += 1
    assert (covered >= 1).all()
    for starts, side in ((grid.rows, min(size, height)), (grid.columns, min(size, width))):
        assert starts[0] == 0
        assert all(b - a <= side - overlap for a, b in zip(starts, starts[1:]))
    assert grid.rows[-1] + min(size, height) == height and grid.columns[-1] + min(size, width) == width


@pytest.mark.parametrize("height, width, size, overlap", GRIDS)
@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_blending_weights_sum_to_one_and_the_image_edges_keep_full_weight(height, width, size, overlap, scale, kind):
    grid = TileGrid(height, width, size, overlap)
    ones = np.ones((1, height, width))
    blended = restore_in_tiles(ones, lambda tile, piece: np.ones((1, tile.height * scale, tile.width * scale)),
                               size, overlap, scale=scale, kind=kind)
    assert blended.shape == (1, height * scale, width * scale)
    np.testing.assert_allclose(blended, 1.0, rtol=0, atol=1e-6)  # normalised weights sum to one
    raw = np.zeros((height * scale, width * scale))
    for tile in grid.tiles:
        weight = tile_weight(tile, scale, kind)
        assert (weight > 0).all() and weight.max() <= 1.0
        raw[tile.window(scale)] += weight
    # The image's corners lie in one tile each, which gives them full weight there.
    for corner in (raw[0, 0], raw[0, -1], raw[-1, 0], raw[-1, -1]):
        assert corner == pytest.approx(1.0)


def test_two_tiles_overlapping_by_the_ramp_need_no_normalisation():
    grid = TileGrid(48, 32, 32, 16)  # rows 0 and 16: exactly 16 rows shared
    first, second = grid.tiles
    total = np.zeros((48, 32))
    total[first.window()] += tile_weight(first)
    total[second.window()] += tile_weight(second)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


@pytest.mark.parametrize("height, width, size, overlap", GRIDS)
def test_an_identity_restore_gives_the_image_back_exactly(height, width, size, overlap):
    image = np.random.default_rng(1).random((3, height, width)).astype(np.float32)
    same = restore_in_tiles(image, lambda tile, piece: piece, size, overlap)
    assert same.dtype == np.float32 and np.array_equal(same, image)


@pytest.mark.parametrize("factor", [2, 3])
def test_super_resolution_tiles_are_blended_on_the_larger_grid(factor):
    image = np.random.default_rng(2).random((2, 45, 38)).astype(np.float32)

    def enlarge(piece):
        return np.repeat(np.repeat(piece, factor, axis=1), factor, axis=2)

    tiled = restore_in_tiles(image, lambda tile, piece: enlarge(piece), 16, 5, scale=factor)
    assert np.array_equal(tiled, enlarge(image))


def test_a_constant_offset_per_tile_leaves_no_seam():
    """Each tile comes back shifted by its own constant: hard stitching would jump by the
    difference at every seam; the blend must move between them gradually."""
    rng = np.random.default_rng(3)
    image = np.zeros((1, 120, 150))
    grid = TileGrid(120, 150, 48, 16)
    offsets = rng.uniform(-0.1, 0.1, grid.count)
    blended = restore_in_tiles(image, lambda tile, piece: piece + offsets[tile.number], 48, 16)[0]
    spread = offsets.max() - offsets.min()
    steps = max(np.abs(np.diff(blended, axis=0)).max(), np.abs(np.diff(blended, axis=1)).max())
    # The raised cosine spans half of an overlap of at least 16 pixels: per pixel it changes
    # by at most pi / 16 of the spread (hard stitching: by the whole spread).
    assert steps <= spread * np.pi / 16 + 1e-6
    assert blended.min() >= offsets.min() - 1e-6 and blended.max() <= offsets.max() + 1e-6  # float32 result


def seam_band(grid: TileGrid, width: int) -> np.ndarray:
    """Pixels within ``width`` of a tile's inner edge (where hard stitching would show)."""
    band = np.zeros((grid.height, grid.width), bool)
    for tile in grid.tiles:
        rows, cols = tile.window()
        top, bottom, left, right = tile.overlaps
        if bottom:
            band[max(rows.stop - width, 0):rows.stop, cols] = True
        if top:
            band[rows.start:rows.start + width, cols] = True
        if right:
            band[rows, max(cols.stop - width, 0):cols.stop] = True
        if left:
            band[rows, cols.start:cols.start + width] = True
    return band


def test_a_smoothing_restore_is_no_worse_at_the_seams_than_the_whole_image():
    """A restore with edge effects at every tile border (a Gaussian filter that only sees
    its tile, padding with a constant): blended, the error in a band around the seams is
    that of the same filter on the whole image, while hard stitching is far worse there."""
    rng = np.random.default_rng(4)
    clean = smooth_image(160)[None].astype(np.float64)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    grid = TileGrid(160, 160, 64, 24)

    def smooth(piece):
        return ndimage.gaussian_filter(piece, sigma=(0, 3, 3), mode="constant", cval=0.5)

    blended = restore_in_tiles(noisy, lambda tile, piece: smooth(piece), 64, 24)[0]
    whole = smooth(noisy)[0]
    hard = np.zeros_like(blended)  # each pixel from the last tile covering it: hard seams
    for tile in grid.tiles:
        hard[tile.window()] = smooth(tile.cut(noisy))[0]
    band = seam_band(grid, 4)
    inner = np.zeros_like(band)
    inner[12:-12, 12:-12] = True  # the image's own edges have the filter's edge effect either way

    def rmse(result, where):
        return float(np.sqrt(np.mean((result - clean[0])[where] ** 2)))

    assert rmse(blended, inner & band) <= 1.01 * rmse(whole, inner & band)
    assert rmse(blended, inner & ~band) <= 1.01 * rmse(whole, inner & ~band)
    assert rmse(hard, inner & band) > 5 * rmse(blended, inner & band)


def test_the_blender_preview_shows_the_background_where_no_tile_is_done():
    grid = TileGrid(40, 40, 24, 8)
    background = np.full((1, 40, 40), 0.25, np.float32)
    blender = TileBlender(grid, 1, background=background)
    first = grid.tiles[0]
    preview = blender.preview(first, np.ones((1, 24, 24)))
    assert preview[0, 0, 0] == 1.0 and preview[0, -1, -1] == 0.25
    blender.add(first, np.ones((1, 24, 24)))
    assert blender.picture()[0, 0, 0] == 1.0
    with pytest.raises(ValueError, match="not covered"):
        blender.result()


def test_the_tile_starts_spread_evenly():
    assert tile_starts(512, 256, 32) == [0, 128, 256]
    assert tile_starts(256, 256, 32) == [0]
    starts = tile_starts(4096, 1024, 128)
    assert starts[0] == 0 and starts[-1] == 3072 and len(starts) == 5


def test_tiles_are_planned_when_the_whole_image_does_not_fit():
    def needed(h, w):
        return h * w * 1000

    assert plan_tiles(needed, 512, 512, free_bytes=10**12) is None  # fits
    plan = plan_tiles(needed, 4096, 4096, free_bytes=2 * 1024 * 1024 * 1000)
    assert plan.reason == "memory" and plan.grid.tile_size == 1024  # 1024^2 * 1000 <= half of free
    assert plan.tile_bytes <= 0.5 * plan.free_bytes < plan.whole_bytes
    assert "tiles of 1024x1024 px" in plan.describe() and "GiB free" in plan.describe()
    # Super-resolution: the tile is chosen on the enlarged grid, given in input pixels.
    plan = plan_tiles(needed, 1024, 1024, scale=4, free_bytes=2 * 1024 * 1024 * 1000)
    assert plan.grid.tile_size == 256
    assert plan_tiles(needed, 4096, 4096, free_bytes=None) is None  # unknown: no guess
    assert plan_tiles(needed, 100, 80, tile_size=32, overlap=8).grid.count == 12  # asked for: 4 x 3
    assert plan_tiles(needed, 100, 80, tile_size=100) is None  # one tile is the whole image


@pytest.mark.parametrize("size, overlap, message", [(8, None, "at least 16"), (32, 17, "half the tile"),
                                                     (32, -1, "0 or more")])
def test_bad_tile_settings_are_refused_with_one_line(size, overlap, message):
    with pytest.raises(InputError, match=message):
        plan_tiles(lambda h, w: 0, 100, 100, tile_size=size, overlap=overlap)


def test_an_inpainting_mask_is_cut_with_its_tile():
    known = (np.random.default_rng(5).random((1, 50, 60)) > 0.3).astype(np.float32)
    grid = TileGrid(50, 60, 32, 8)
    for tile in grid.tiles:
        model = cut_forward_model(KnownPixels(known), tile)
        assert np.array_equal(model.known[0].numpy(), tile.cut(known))


# -- the API ----------------------------------------------------------------------------


def test_a_tiled_fit_streams_whole_images_naming_the_tile():
    image = smooth_image(70)[:, :50]
    snaps = list(iter_restore("denoise", image, iterations=4, snapshot_every=2, tile_size=32, tile_overlap=8,
                              stopping="none", **TINY))
    count = TileGrid(70, 50, 32, 8).count
    assert count == 6
    assert all(snap.output.shape == image.shape and snap.average.shape == image.shape for snap in snaps)
    assert [snap.tile for snap in snaps if not snap.done][:3] == [(1, 6), (1, 6), (2, 6)]
    assert all(snap.iteration <= 4 for snap in snaps if not snap.done)  # counts per tile
    final = snaps[-1]
    assert final.done and final.tile == (6, 6) and sum(snap.done for snap in snaps) == 1
    assert final.iteration == 6 * 4 and final.stop_reason == "budget"
    tiling = final.settings["tiling"]
    assert tiling["count"] == 6 and tiling["overlap"] == 8 and tiling["reason"] == "tile_size"
    assert [tile["iterations_run"] for tile in tiling["tiles"]] == [4] * 6
    # One noise estimate, the whole image's, for every tile.
    from napari_dip.arrays import prepare_image

    observed, _, _ = prepare_image(image, None)
    assert final.settings["noise_sigma_estimate"] == pytest.approx(estimate_noise(observed))


def test_a_tiled_denoise_is_close_to_its_input_and_records_nothing_else_changed():
    image = (smooth_image(64) * 255).astype(np.uint8)
    result = denoise(image, iterations=30, tile_size=32, stopping="none", **TINY)
    assert result.shape == image.shape and result.dtype == np.uint8
    whole = denoise(image, iterations=30, stopping="none", **TINY)
    # Tiny network, few iterations: both are rough, but the tiles must not be worse by much.
    tiled_error = np.abs(result.astype(float) - image).mean()
    whole_error = np.abs(whole.astype(float) - image).mean()
    assert tiled_error <= 1.5 * whole_error + 2


def test_super_resolution_in_tiles_has_the_enlarged_shape():
    image = smooth_image(40)[:, :30]
    result = super_resolve(image, 2, iterations=3, tile_size=24, tile_overlap=6, **TINY)
    assert result.shape == (80, 60) and result.dtype == image.dtype


def test_inpainting_in_tiles_keeps_the_known_pixels_and_copies_tiles_without_holes():
    image = smooth_image(64)
    holes = np.zeros(image.shape, bool)
    holes[5:12, 5:12] = True  # only in the first tile's corner
    snaps = list(iter_restore("inpaint", image, mask=holes, iterations=3, snapshot_every=None, tile_size=32,
                              tile_overlap=8, **TINY))
    final = snaps[-1]
    assert np.array_equal(final.average[~holes], image[~holes])
    stops = [tile["stop_reason"] for tile in final.settings["tiling"]["tiles"]]
    assert stops.count("no holes") == len(stops) - 1 and len(stops) == 9


def test_tiles_in_the_options_are_checked_before_the_fit():
    image = smooth_image(64)
    with pytest.raises(InputError, match="needs a tile size"):
        denoise(image, tile_overlap=8, **TINY)
    with pytest.raises(InputError, match="half the tile"):
        denoise(image, tile_size=32, tile_overlap=20, **TINY)


def test_a_stack_is_tiled_plane_by_plane():
    stack = np.stack([smooth_image(48), smooth_image(48, seed=1)])
    result = denoise(stack, axes="ZYX", iterations=2, tile_size=32, **TINY)
    assert result.shape == stack.shape


def test_the_command_line_says_it_tiles_and_records_the_tiles(tmp_path, capsys):
    import imageio.v3 as iio

    from napari_dip.cli import main
    from napari_dip.io import read_provenance

    source, out = tmp_path / "grey.png", tmp_path / "out.tif"
    iio.imwrite(source, (smooth_image(64) * 255).astype(np.uint8))
    code = main(["denoise", str(source), "-o", str(out), "--preset", "fast", "--channels", "8", "--iterations", "2",
                 "--device", "cpu", "--progress-every", "1", "--tile-size", "32", "--tile-overlap", "8"])
    assert code == 0
    captured = capsys.readouterr()
    plan, wrote = captured.out.strip().splitlines()
    # At least the 8 asked for; the three tiles of a 64-pixel side start at 0, 16 and 32.
    assert "in 9 tiles of 32x32 px (3x3, overlap 16 px)" in plan
    assert "in 9 tiles" in wrote
    assert "tile 9/9" in captured.err  # the bar names the tile (its last state, drawn when it closes)
    tiling = read_provenance(out)["tiling"]
    assert tiling["count"] == 9 and tiling["tile_size"] == 32 and tiling["overlap"] == 8
    assert tiling["overlaps_used"] == [16, 16] and tiling["rows"] == tiling["columns"] == [0, 16, 32]
    assert [tile["iterations_run"] for tile in tiling["tiles"]] == [2] * 9


def test_the_widget_counts_a_tiled_fit_once_over_all_tiles():
    """The widget's progress bar runs once over the tiles, and the iterations it reports
    (for the rate and the record) add up over the tiles instead of restarting."""
    from types import SimpleNamespace

    from napari_dip.widgets.run import Run

    run = Run(plan=SimpleNamespace(iterations=10, planes=[()]), output=None)
    run.note_snapshot(0, SimpleNamespace(settings={}, best_iteration=None, backtracks=0, done=False))

    def snap(iteration, tile, done=False):
        return SimpleNamespace(iteration=iteration, iterations=20 if done else 10, done=done, tile=tile)

    seen = []
    for snapshot in (snap(5, (1, 2)), snap(10, (1, 2)), snap(5, (2, 2)), snap(20, (2, 2), done=True)):
        run.count_progress(snapshot)
        seen.append((run.progress_count, run.done_iterations))
    assert seen == [(2, 5), (5, 10), (7, 15), (10, 20)]


def test_a_weighted_noise_fit_in_tiles_is_refused_before_anything_runs():
    # Tiles are fitted with the squared error: a stack is refused when its stream is made,
    # as a single image is, not when its first plane starts (after the plan was printed).
    from napari_dip.restore import iter_restore_planes

    rng = np.random.default_rng(0)
    stack = (rng.poisson(np.full((2, 64, 64), 40.0)) * 10 + 100).astype(np.uint16)
    for start in (lambda: iter_restore("denoise", stack[0], **WEIGHTED),
                  lambda: iter_restore_planes("denoise", stack, axes="ZYX", **WEIGHTED)):
        with pytest.raises(InputError, match="noise_fit='gat' for a tiled fit"):
            start()

