"""Images larger than the device: restore in overlapping tiles and blend them without seams.

A :class:`TileGrid` cuts an image of ``H x W`` pixels into tiles of at most
``tile_size`` pixels a side that overlap their neighbours by at least ``overlap`` pixels
(the tiles are spread evenly, so the overlap is often larger). Each tile is restored on
its own; a :class:`TileBlender` puts the results together, weighting each tile with a
ramp that rises over its overlap with the neighbour on that side (a raised cosine by
default, or linear; nearly 0 over the outer quarter of the overlap, where a network's
output is least reliable) and is 1 elsewhere, including along the image's own edges. The
weights are normalised per pixel, so they sum to one everywhere: where two tiles overlap
the result moves smoothly from one to the other instead of jumping at a seam.

Super-resolution cuts the low-resolution input and blends the ``factor`` times larger
results (``scale``); inpainting cuts the mask with the image. The noise level is
estimated once on the whole image by the caller, so every tile is fitted with the same
settings.

:func:`plan_tiles` decides whether a fit needs tiles (the whole image's estimated memory
does not fit the device's free memory, or the caller asked for a ``tile_size``) and how
large they are; :class:`TiledFit` runs the tiles' fits one after the other and streams
whole-image snapshots, like :class:`~napari_dip.engine.fit.Fitter`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .fit import Snapshot

#: Tile sides (of the restored image) tried, largest first, when the whole image does not fit.
AUTO_TILE_SIZES = (2048, 1024, 512, 256, 128)
#: Tiles are used when the whole fit's estimate is above this share of the free memory...
WHOLE_IMAGE_SHARE = 0.8
#: ... and an automatic tile's fit may take at most this share of it.
TILE_SHARE = 0.5
#: The smallest tile side accepted.
MIN_TILE_SIZE = 16
RAMPS = ("cosine", "linear")
#: The share of an overlap, at each end of its ramp, where a tile's weight stays at
#: :data:`EDGE_WEIGHT` (at its border) or at 1 (inside): conv nets are weakest at borders.
EDGE_SHARE = 0.25
EDGE_WEIGHT = 1e-6


def default_overlap(tile_size: int) -> int:
    """The overlap used when none is given: an eighth of the tile, at least 16 pixels
    (never more than half the tile).

    >>> default_overlap(256), default_overlap(64), default_overlap(1024)
    (32, 16, 128)
    """
    return min(tile_size // 2, max(16, tile_size // 8))


def tile_starts(size: int, tile_size: int, overlap: int) -> list[int]:
    """Where the tiles along one axis start: as few tiles as overlap by at least
    ``overlap``, spread evenly from the first pixel to the last.

    >>> tile_starts(100, 256, 32), tile_starts(512, 256, 32), tile_starts(300, 128, 16)
    ([0], [0, 128, 256], [0, 86, 172])
    """
    if size <= tile_size:
        return [0]
    step = tile_size - overlap
    count = math.ceil((size - overlap) / step)
    return [round(i * (size - tile_size) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the input image and how far it overlaps each neighbour
    (``0`` on a side where it touches the image's edge)."""

    number: int  # 0-based, row by row
    top: int
    left: int
    height: int
    width: int
    overlaps: tuple[int, int, int, int]  # top, bottom, left, right

    def window(self, scale: int = 1) -> tuple[slice, slice]:
        """Its rows and columns, in an image ``scale`` times larger than the input."""
        return (slice(self.top * scale, (self.top + self.height) * scale),
                slice(self.left * scale, (self.left + self.width) * scale))

    def cut(self, array: np.ndarray, scale: int = 1) -> np.ndarray:
        """Its part of a ``(..., H, W)`` array (a view)."""
        rows, cols = self.window(scale)
        return array[..., rows, cols]

    def box(self) -> list[int]:
        """``[top, left, height, width]`` in input pixels, for metadata."""
        return [self.top, self.left, self.height, self.width]


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles covering an ``height x width`` image."""

    height: int
    width: int
    tile_size: int
    overlap: int

    def __post_init__(self):
        if self.tile_size < MIN_TILE_SIZE:
            raise InputError(f"the tile size must be at least {MIN_TILE_SIZE} pixels, got {self.tile_size}")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise InputError(
                f"the tile overlap must be between 0 and half the tile size ({self.tile_size // 2}), got {self.overlap}"
            )

    @property
    def rows(self) -> list[int]:
        return tile_starts(self.height, self.tile_size, self.overlap)

    @property
    def columns(self) -> list[int]:
        return tile_starts(self.width, self.tile_size, self.overlap)

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)

    @property
    def tiles(self) -> list[Tile]:
        rows, columns = self.rows, self.columns
        tile_h, tile_w = min(self.tile_size, self.height), min(self.tile_size, self.width)
        tiles = []
        for i, top in enumerate(rows):
            for j, left in enumerate(columns):
                overlaps = (
                    rows[i - 1] + tile_h - top if i > 0 else 0,
                    top + tile_h - rows[i + 1] if i + 1 < len(rows) else 0,
                    columns[j - 1] + tile_w - left if j > 0 else 0,
                    left + tile_w - columns[j + 1] if j + 1 < len(columns) else 0,
                )
                tiles.append(Tile(len(tiles), top, left, tile_h, tile_w, overlaps))
        return tiles

    def overlaps_used(self) -> tuple[int, int] | None:
        """The smallest and largest overlap of neighbouring tiles, in pixels (``None`` for
        one tile). At least :attr:`overlap`, more where the tiles are spread to cover the
        image evenly (a 256-pixel side in 128-pixel tiles overlaps by 64)."""
        shared = [width for tile in self.tiles for width in tile.overlaps if width > 0]
        return (min(shared), max(shared)) if shared else None

    def describe(self) -> str:
        """``"9 tiles of 256x256 px (3x3, overlap 64 px)"``: the overlaps the tiles have."""
        tile_h, tile_w = min(self.tile_size, self.height), min(self.tile_size, self.width)
        used = self.overlaps_used()
        overlap = "" if used is None else (f", overlap {used[0]} px" if used[0] == used[1]
                                           else f", overlap {used[0]}-{used[1]} px")
        tiles = "1 tile" if self.count == 1 else f"{self.count} tiles"
        return f"{tiles} of {tile_h}x{tile_w} px ({len(self.rows)}x{len(self.columns)}{overlap})"

    def to_dict(self) -> dict:
        """``overlap`` is the least overlap asked for, ``overlaps_used`` the smallest and
        largest the tiles have."""
        used = self.overlaps_used()
        return {"tile_size": self.tile_size, "overlap": self.overlap, "count": self.count,
                "rows": self.rows, "columns": self.columns, "overlaps_used": None if used is None else list(used)}


def ramp(length: int, kind: str = "cosine") -> np.ndarray:
    """Weights rising from almost 0 to 1 over ``length`` pixels, never exactly 0.

    The outer quarter (:data:`EDGE_SHARE`) stays at almost nothing and the inner quarter
    at 1: a network's output is least reliable at its tile's border, so the neighbour's
    pixels are taken there. Between them the weight rises as a raised cosine (or
    linearly). A rising ramp and the same ramp reversed sum to one at every pixel (to
    within :data:`EDGE_WEIGHT`), so two tiles that overlap by ``length`` pixels blend into
    weights that need almost no normalisation.

    >>> up = ramp(16)
    >>> bool(np.allclose(up + up[::-1], 1.0, atol=1e-5)), bool((up > 0).all()), float(up[-1])
    (True, True, 1.0)
    """
    if kind not in RAMPS:
        raise InputError(f"the blending ramp must be one of {RAMPS}, got {kind!r}")
    edge = int(length * EDGE_SHARE)
    middle = length - 2 * edge
    t = (np.arange(middle, dtype=np.float64) + 0.5) / max(middle, 1)
    rise = np.sin(0.5 * np.pi * t) ** 2 if kind == "cosine" else t
    return np.concatenate([np.full(edge, EDGE_WEIGHT), np.maximum(rise, EDGE_WEIGHT), np.ones(edge)])


def tile_weight(tile: Tile, scale: int = 1, kind: str = "cosine") -> np.ndarray:
    """A tile's blending weight, ``(height * scale, width * scale)``: the ramp over its
    overlap on each side that has a neighbour, 1 elsewhere (the image's edges keep their
    full weight)."""
    top, bottom, left, right = (side * scale for side in tile.overlaps)

    def profile(size, start, end):
        weights = np.ones(size)
        if start:
            weights[:start] *= ramp(start, kind)
        if end:
            weights[size - end:] *= ramp(end, kind)[::-1]
        return weights

    return np.outer(profile(tile.height * scale, top, bottom), profile(tile.width * scale, left, right))


class TileBlender:
    """Puts restored tiles together into one ``(C, H * scale, W * scale)`` image.

    ``add`` accumulates a finished tile's values times its weight and the weights;
    ``result`` divides, so the weights sum to one at every pixel. ``preview`` is the image
    so far with a tile still being fitted blended in, and ``background`` (e.g. the input)
    where no tile has been restored yet.
    """

    def __init__(self, grid: TileGrid, channels: int, scale: int = 1, kind: str = "cosine",
                 background: np.ndarray | None = None):
        self.grid, self.scale, self.kind = grid, scale, kind
        shape = (grid.height * scale, grid.width * scale)
        # float64: an identity restore gives every pixel back exactly after the division.
        self._sum = np.zeros((channels, *shape), np.float64)
        self._weight = np.zeros(shape, np.float64)
        self._picture = (np.zeros((channels, *shape), np.float32) if background is None
                         else np.array(background, np.float32, copy=True))
        if self._picture.shape != self._sum.shape:
            raise ValueError(f"background must be {self._sum.shape}, got {self._picture.shape}")
        self._weights: dict[int, np.ndarray] = {}

    def weight(self, tile: Tile) -> np.ndarray:
        if tile.number not in self._weights:
            self._weights[tile.number] = tile_weight(tile, self.scale, self.kind)
        return self._weights[tile.number]

    def add(self, tile: Tile, values: np.ndarray) -> None:
        rows, cols = tile.window(self.scale)
        weight = self.weight(tile)
        self._sum[:, rows, cols] += weight * np.asarray(values, np.float64)
        self._weight[rows, cols] += weight
        self._picture[:, rows, cols] = self._sum[:, rows, cols] / self._weight[rows, cols]
        self._weights.pop(tile.number, None)

    def preview(self, tile: Tile, values: np.ndarray) -> np.ndarray:
        """The whole image with ``tile`` (not added yet) showing ``values``: a new array."""
        rows, cols = tile.window(self.scale)
        weight = self.weight(tile)
        picture = self._picture.copy()
        picture[:, rows, cols] = (self._sum[:, rows, cols] + weight * values) / (self._weight[rows, cols] + weight)
        return picture

    def result(self) -> np.ndarray:
        """The blended image (float32); every pixel must be covered by an added tile."""
        if not (self._weight > 0).all():
            raise ValueError("some pixels are not covered by a restored tile yet")
        return (self._sum / self._weight).astype(np.float32)

    def picture(self) -> np.ndarray:
        """The image so far (a copy): blended tiles, the background elsewhere."""
        return self._picture.copy()


def restore_in_tiles(
    image: np.ndarray,
    restore: Callable[[Tile, np.ndarray], np.ndarray],
    tile_size: int,
    overlap: int | None = None,
    scale: int = 1,
    kind: str = "cosine",
) -> np.ndarray:
    """Restore a ``(C, H, W)`` image tile by tile: ``restore(tile, piece)`` gets the tile
    and its ``(C, h, w)`` piece of ``image`` and returns ``(C, h * scale, w * scale)``; the
    results are blended into ``(C, H * scale, W * scale)`` float32.

    >>> image = np.random.default_rng(0).random((1, 50, 70)).astype(np.float32)
    >>> same = restore_in_tiles(image, lambda tile, piece: piece, tile_size=32, overlap=8)
    >>> bool((same == image).all())
    True
    """
    image = np.asarray(image)
    grid = TileGrid(image.shape[-2], image.shape[-1], tile_size, default_overlap(tile_size) if overlap is None
                    else overlap)
    blender = TileBlender(grid, image.shape[0], scale, kind)
    for tile in grid.tiles:
        blender.add(tile, restore(tile, tile.cut(image)))
    return blender.result()


# -- when and how to tile a fit ----------------------------------------------------------


@dataclass(frozen=True)
class TilePlan:
    """Tiles for one fit and why: ``reason`` is ``"tile_size"`` (asked for) or ``"memory"``."""

    grid: TileGrid
    reason: str
    whole_bytes: int  # the whole image's estimated need
    tile_bytes: int  # one tile's
    free_bytes: int | None
    kind: str = "cosine"

    def describe(self) -> str:
        """For a plan line: ``"in 9 tiles of 256x256 px (3x3, overlap 64 px), about 0.3 GiB each"``."""
        why = ""
        if self.reason == "memory" and self.free_bytes:
            why = f"; the whole image needs about {_gib(self.whole_bytes)} GiB, {_gib(self.free_bytes)} GiB free"
        return f"in {self.grid.describe()}, about {_gib(self.tile_bytes)} GiB each{why}"

    def to_dict(self) -> dict:
        return {**self.grid.to_dict(), "reason": self.reason, "blend": self.kind,
                "whole_image_bytes": self.whole_bytes, "tile_bytes": self.tile_bytes, "free_bytes": self.free_bytes}


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f}"


def plan_tiles(
    needed: Callable[[int, int], int],
    height: int,
    width: int,
    *,
    scale: int = 1,
    free_bytes: int | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    kind: str = "cosine",
) -> TilePlan | None:
    """Tiles for a fit of an ``height x width`` input, or ``None`` for one whole fit.

    ``needed(h, w)`` estimates a fit's memory for a restored image of ``h x w`` (``scale``
    times the input). With ``tile_size`` (input pixels) the image is tiled whenever it is
    larger than one tile; without, only when the whole fit needs more than
    :data:`WHOLE_IMAGE_SHARE` of ``free_bytes``, in the largest tiles of
    :data:`AUTO_TILE_SIZES` whose fit needs at most :data:`TILE_SHARE` of it (the smallest
    if none does: the fit then says it is out of memory).
    """
    whole = needed(height * scale, width * scale)
    if overlap is not None and overlap < 0:
        raise InputError(f"the tile overlap must be 0 or more, got {overlap}")
    if tile_size is not None:
        if tile_size < MIN_TILE_SIZE:
            raise InputError(f"the tile size must be at least {MIN_TILE_SIZE} pixels, got {tile_size}")
        if tile_size >= max(height, width):
            return None
        reason = "tile_size"
    else:
        if free_bytes is None or whole <= WHOLE_IMAGE_SHARE * free_bytes:
            return None
        candidates = [size // scale for size in AUTO_TILE_SIZES if MIN_TILE_SIZE <= size // scale < max(height, width)]
        if not candidates:
            return None
        tile_size = candidates[-1]
        for size in candidates:
            side_h, side_w = min(size, height), min(size, width)
            if needed(side_h * scale, side_w * scale) <= TILE_SHARE * free_bytes:
                tile_size = size
                break
        reason = "memory"
    grid = TileGrid(height, width, tile_size, default_overlap(tile_size) if overlap is None else overlap)
    tile_bytes = needed(min(tile_size, height) * scale, min(tile_size, width) * scale)
    return TilePlan(grid, reason, whole, tile_bytes, free_bytes, kind)


def plan_fit_tiles(
    network,
    channels: int,
    height: int,
    width: int,
    *,
    factor: int = 1,
    runs: int = 1,
    device: str = "auto",
    tile_size: int | None = None,
    overlap: int | None = None,
) -> TilePlan | None:
    """:func:`plan_tiles` for a fit of ``network`` on a ``(channels, height, width)`` input:
    memory from :func:`~napari_dip.engine.fit.estimate_memory_bytes` (times ``runs``),
    free memory of ``device`` now (looked up only when no ``tile_size`` is given)."""
    from .devices import free_memory_bytes, resolve_device
    from .fit import estimate_memory_bytes

    if tile_size is None and overlap is not None:
        raise InputError("a tile overlap needs a tile size")

    def needed(h, w):
        return estimate_memory_bytes(network, channels, h, w) * (runs or 1)

    free = None if tile_size is not None else free_memory_bytes(resolve_device(device))
    return plan_tiles(needed, height, width, scale=factor or 1, free_bytes=free, tile_size=tile_size,
                      overlap=overlap)


# -- fitting tile by tile ----------------------------------------------------------------


@dataclass
class TileSnapshot(Snapshot):
    """A :class:`~napari_dip.engine.fit.Snapshot` of a tiled fit: ``tile`` is ``(k, n)``,
    1-based, the tile whose fit the iteration counts belong to."""

    tile: tuple[int, int] | None = None


def _whole_image(snapshot, tile: tuple[int, int], **changes) -> TileSnapshot:
    """A tile's snapshot made a whole image's: ``changes`` give the whole-image arrays;
    any other array it carries is the tile's own, which is dropped."""
    values = {name: None if isinstance(value, np.ndarray) else value for name, value in vars(snapshot).items()}
    return TileSnapshot(**{**values, **changes, "tile": tile})


def tile_of(snapshot) -> tuple[int, int] | None:
    """``(k, n)`` when ``snapshot`` comes from tile k of a tiled fit of n tiles, else ``None``."""
    return getattr(snapshot, "tile", None)


def cut_forward_model(model, tile: Tile):
    """The degradation model of one tile: the same kind, its part of an inpainting mask."""
    from .forward import Identity, KnownPixels, LanczosDownsampler

    if isinstance(model, KnownPixels):
        return KnownPixels(tile.cut(model.known[0].detach().cpu().numpy()))
    if isinstance(model, LanczosDownsampler):
        return LanczosDownsampler(model.factor, model.channels)
    if isinstance(model, Identity):
        return Identity()
    raise InputError(f"tiles cannot be cut for the forward model {type(model).__name__}")


class TiledFit:
    """The fits of a tiled image, one tile after the other, streamed as whole images.

    Duck-types :class:`~napari_dip.engine.fit.Fitter` for the API: ``config`` and
    ``run(snapshot_every, snapshot_seconds, since)``. Each snapshot's ``iteration``,
    ``iterations``, ``loss`` and ``elapsed`` are those of the tile being fitted, named by
    ``Snapshot.tile`` (``(k, n)``, 1-based); its arrays are the whole image: finished tiles
    blended, the current tile's state blended in, the input (enlarged by pixel repetition
    for super-resolution) where no tile has been fitted yet. With ``every_tile`` the end of
    each tile is a snapshot too. The last snapshot (``done=True``) is the blended result,
    with the iterations, seconds and backtracks of all tiles added up, ``stop_reason`` the
    tiles' reasons (one, or several joined with ``+``) and
    ``settings["tiling"]["tiles"]`` each tile's box and outcome.

    An inpainting tile without holes is not fitted: its pixels are copied through.
    """

    def __init__(self, observation: np.ndarray, forward_model, network, config, plan: TilePlan,
                 every_tile: bool = True):
        from .forward import KnownPixels

        self.observation = np.asarray(observation, np.float32)
        self.forward_model, self.network, self.config, self.plan = forward_model, network, config, plan
        self.every_tile = every_tile
        self.scale = int(getattr(forward_model, "factor", 1))
        self.inpainting = isinstance(forward_model, KnownPixels)

    def run(self, snapshot_every: int = 100, snapshot_seconds: float | None = None,
            since: float | None = None) -> Iterator:
        from .fit import Fitter

        grid, scale = self.plan.grid, self.scale
        background = self.observation
        if scale > 1:
            background = np.repeat(np.repeat(background, scale, axis=1), scale, axis=2)
        channels = self.observation.shape[0]
        averages = TileBlender(grid, channels, scale, self.plan.kind, background)
        outputs = TileBlender(grid, channels, scale, self.plan.kind, background)
        tiles, results = grid.tiles, []
        count = len(tiles)
        started, losses = time.perf_counter(), []
        settings: dict = {}
        for tile in tiles:
            piece = np.ascontiguousarray(tile.cut(self.observation))
            model = cut_forward_model(self.forward_model, tile)
            place = {"number": tile.number + 1, "count": count, "box": tile.box()}
            if self.inpainting and bool((model.known > 0).all()):
                averages.add(tile, piece)
                outputs.add(tile, piece)
                results.append({"box": tile.box(), "iterations_run": 0, "stop_reason": "no holes"})
                continue
            if self.inpainting and not bool((model.known > 0).any()):
                raise InputError(f"tile {tile.number + 1} of {count} ({tile.box()}) has no known pixel to fit; "
                                 "use larger tiles")
            fitter = Fitter(piece, model, self.network, self.config)
            # The first tile's first snapshot counts from the caller's start (Fitter.run).
            snapshots = fitter.run(snapshot_every, snapshot_seconds, since)
            since = None
            try:
                for snap in snapshots:
                    extra = {**snap.settings, "tile": place} if snap.settings else {}
                    if not snap.done:
                        yield _whole_image(snap, (tile.number + 1, count), output=outputs.preview(tile, snap.output),
                                           average=averages.preview(tile, snap.average), settings=extra)
                        continue
                    averages.add(tile, snap.average)
                    outputs.add(tile, snap.output)
                    settings = snap.settings
                    losses.append(snap.loss)
                    results.append({"box": tile.box(), "iterations_run": snap.iteration,
                                    "budget": snap.iterations, "stop_reason": snap.stop_reason,
                                    "best_iteration": snap.best_iteration, "backtracks": snap.backtracks,
                                    "seconds": round(snap.elapsed, 3)})
                    if self.every_tile and tile.number + 1 < count:
                        yield _whole_image(snap, (tile.number + 1, count), output=outputs.picture(),
                                           average=averages.picture(), done=False, settings=extra)
            finally:
                snapshots.close()
            del fitter
        fitted = [r for r in results if r["stop_reason"] != "no holes"]
        reasons = list(dict.fromkeys(r["stop_reason"] for r in fitted)) or ["no holes"]
        iterations = sum(r["iterations_run"] for r in fitted)
        settings = {**settings, "tiling": {**self.plan.to_dict(), "tiles": results}}
        yield TileSnapshot(
            iteration=iterations,
            iterations=sum(r["budget"] for r in fitted),
            loss=float(np.mean(losses)) if losses else 0.0,
            output=outputs.result(),
            average=averages.result(),
            elapsed=time.perf_counter() - started,
            backtracks=sum(r["backtracks"] for r in fitted),
            done=True,
            stop_reason="+".join(reasons),
            best_iteration=None,
            expected_stop=iterations,
            settings=settings,
            tile=(count, count),
        )
