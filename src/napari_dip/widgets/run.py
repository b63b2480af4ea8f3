"""The state of one run on the main thread: the plane and progress bookkeeping, the PSNR
against a reference, the status line and the record written into the output's metadata.
No Qt here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import layers as geo
from .output import Outputs
from .plan import Plan
from .timing import RateMeter, eta_text, format_rate


def psnr(reference, image) -> float:
    """PSNR in dB with the data range of the reference's type: 255 for uint8, 1 for
    floats in [0, 1], otherwise the reference's own range.

    >>> round(psnr(np.zeros(4, np.uint8), np.full(4, 255, np.uint8)), 2)
    0.0
    """
    dtype = np.asarray(reference).dtype
    reference = np.asarray(reference, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        return float("nan")
    if dtype == np.uint8:
        span = 255.0
    elif dtype.kind == "f" and reference.min() >= 0.0 and reference.max() <= 1.0:
        span = 1.0
    else:
        span = float(reference.max() - reference.min())
    mse = float(np.mean((reference - image) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10((span or 1.0) ** 2 / mse)


@dataclass
class Run:
    """The state of one run on the main thread while its worker goes."""

    plan: Plan
    output: Outputs
    worker: object = None
    pbar: object = None
    meter: RateMeter = field(default_factory=RateMeter)
    stop_reason: str | None = None  # "user", "closed", "error", "output layer removed"
    engine_stop_reason: str | None = None
    error: str | None = None
    internal_error: bool = False  # a bug, not the user's input: napari shows the traceback
    engine_settings: dict = field(default_factory=dict)
    snapshots_received: int = 0
    plane_done: int = 0  # iterations done in the current plane
    planes_finished: int = 0
    iterations_finished: int = 0  # in the planes before the current one
    plane_complete: bool = False
    last_plane: int = -1
    last_psnr: float | None = None
    closed: bool = False
    #: Moves the viewer's sliders to the plane being written (a stack), or ``None``.
    follower: object = None
    #: Planes of a stack copied through because they are constant (plane indices).
    constant_planes: list = field(default_factory=list)
    #: The engine's warnings: message -> the plane indices it came for, in order.
    warnings: dict = field(default_factory=dict)
    #: One record per finished (or copied-through) plane: iterations, stop, best iteration.
    plane_results: list = field(default_factory=list)
    best_iteration: int | None = None  # the stopping rule's best so far, in the current plane
    backtracks: int = 0  # in the current plane
    #: Where the current plane was warm-started from (``settings["warm_start"]``), or ``None``.
    warm_from: dict | None = None
    #: A tiled fit (an image larger than the device): the tile now ``(k, n)``, the iterations
    #: of the plane's finished tiles, and the current tile's iteration and budget.
    tile: tuple | None = None
    tiles_done_iterations: int = 0
    tile_iteration: int = 0
    tile_budget: int = 1
    #: The trust maps asked for (:class:`.trust.TrustMaps`), or ``None``.
    trust: object = None

    @property
    def total_iterations(self) -> int:
        return self.plan.iterations * len(self.plan.planes)

    @property
    def done_iterations(self) -> int:
        """Iterations actually run (planes may stop early with automatic stopping)."""
        return self.iterations_finished + self.plane_done

    @property
    def by_planes(self) -> bool:
        """A stack's progress counts planes (their budgets differ with warm start)."""
        return len(self.plan.planes) > 1

    @property
    def progress_total(self) -> int:
        return len(self.plan.planes) if self.by_planes else self.plan.iterations

    @property
    def progress_count(self) -> int:
        """Progress in planes for a stack, else in budget units; a plane that stopped
        early counts as complete."""
        if self.by_planes:
            return self.planes_finished
        current = self.plane_done
        if self.tile is not None:  # a tiled fit: the bar runs once over all tiles
            k, n = self.tile
            current = int(self.plan.iterations * (k - 1 + min(self.tile_iteration / self.tile_budget, 1.0)) / n)
        return self.planes_finished * self.plan.iterations + (0 if self.plane_complete else current)

    def abandon(self, *args) -> None:
        """The widget is being destroyed (viewer closed): stop the worker, close the bar."""
        self.closed = True
        # Closing the viewer removes its layers before the widgets go.
        if self.stop_reason in (None, "output layer removed"):
            self.stop_reason = "closed"
        if self.worker is not None:
            self.worker.quit()
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        self.output.close()

    def note_snapshot(self, k: int, snapshot) -> bool:
        """Take in what a snapshot says about the fit; return whether plane ``k`` is new."""
        new_plane = self._enter_plane(k)
        if snapshot.settings:  # the first and the final snapshot say how the fit is made
            self.engine_settings = snapshot.settings
            self.warm_from = snapshot.settings.get("warm_start")
            resolved = snapshot.settings.get("preset")
            if resolved and self.output.layer is None:
                self.plan.choices.preset_resolved = resolved
                self.plan.choices.preset_label = geo.preset_label(snapshot.settings)  # names the output
        self.best_iteration = snapshot.best_iteration
        self.backtracks = int(snapshot.backtracks)
        if snapshot.done:
            self.engine_stop_reason = snapshot.stop_reason
            fit = self.engine_settings.get("fit", {})
            self.plane_results.append({
                "plane": list(self.plan.planes[k]),
                "iterations_run": int(snapshot.iteration),
                "stop_reason": snapshot.stop_reason,
                "best_iteration": snapshot.best_iteration,
                "backtracks": int(snapshot.backtracks),
                "reg_noise_std": fit.get("reg_noise_std"),
                "warm_start": self.warm_from,
                "warm_start_restarted": bool(self.engine_settings.get("warm_start_restarted")),
                "drift": self.engine_settings.get("drift"),
            })
        return new_plane

    def _enter_plane(self, k: int) -> bool:
        if k == self.last_plane:
            return False
        self.iterations_finished += self.plane_done
        self.last_plane = k
        self.plane_done = 0
        self.plane_complete = False
        self.tile, self.tiles_done_iterations, self.tile_iteration, self.tile_budget = None, 0, 0, 1
        self.best_iteration = None
        self.backtracks = 0
        self.warm_from = None
        return True

    def note_copied_plane(self, k: int, reason: str = "constant") -> int:
        """Plane ``k`` was copied through by the API (``reason``: ``"constant"``, or
        ``"no holes"`` for inpainting): it counts as complete. Returns the progress bar's step."""
        self._enter_plane(k)
        previous = self.progress_count
        self.planes_finished += 1
        self.plane_complete = True
        plane = self.plan.planes[k]
        if reason == "constant":
            self.constant_planes.append(plane)
        self.plane_results.append({"plane": list(plane), "iterations_run": 0, "stop_reason": reason,
                                   "best_iteration": None, "backtracks": 0, "reg_noise_std": None,
                                   "warm_start": None, "warm_start_restarted": False, "drift": None})
        return self.progress_count - previous

    def note_warning(self, k: int | None, message: str) -> bool:
        """Record an engine warning for plane ``k`` (``None``: the whole stack); return
        whether it is the run's first."""
        first = not self.warnings
        planes = self.warnings.setdefault(message, [])
        if k is not None and self.plan.planes[k] not in planes:
            planes.append(self.plan.planes[k])
        return first

    def warning_texts(self) -> list[str]:
        """The engine's warnings, each once; in a stack, with the planes they came for."""
        several = len(self.plan.planes) > 1
        return [f"{text} (plane{'s' if len(planes) > 1 else ''} {geo.planes_text(planes)})" if several and planes
                else text
                for text, planes in self.warnings.items()]

    def remarks(self, constant_planes: bool = True) -> list[str]:
        """What the user should know besides the progress: constant planes copied
        through, the engine's first warning, the plan's notes. For the status line."""
        parts = list(self.plan.notes)
        if self.constant_planes and constant_planes:
            count = len(self.constant_planes)
            parts.append(f"{count} constant plane{'s' if count > 1 else ''} copied through unchanged "
                         f"({geo.planes_text(self.constant_planes)})")
        if self.warnings:
            first = next(iter(self.warnings))
            more = len(self.warnings) - 1
            parts.append(f"warning: {first}" + (f" (and {more} more, see the layer's metadata)" if more else ""))
        return parts

    def count_progress(self, snapshot) -> int:
        """Count a written snapshot; return the progress bar's step."""
        previous = self.progress_count
        tile = getattr(snapshot, "tile", None)
        if tile is not None and not snapshot.done:
            if tile != self.tile:  # the next tile counts its iterations from 0 again
                self.tiles_done_iterations += self.tile_iteration
                self.tile = tile
            self.tile_iteration, self.tile_budget = snapshot.iteration, max(snapshot.iterations, 1)
            self.plane_done = self.tiles_done_iterations + snapshot.iteration
        else:  # a tiled fit's blended result counts all its tiles' iterations
            self.plane_done = snapshot.iteration
        if snapshot.done:
            self.planes_finished += 1
            self.plane_complete = True
        self.snapshots_received += 1
        return self.progress_count - previous

    def measure_psnr(self, k: int, image, done: bool = False) -> None:
        reference = self.plan.reference
        if self.plan.reference_per_plane:
            reference = reference[self.plan.planes[k]]
        self.last_psnr = psnr(reference, image)
        if done and self.plane_results:  # the plane's result: kept per plane
            self.plane_results[-1]["psnr_vs_reference"] = self.last_psnr

    def metadata(self, stop_reason: str) -> dict:
        """The outputs' record, under ``napari_dip``: how they were made (each output
        adds its input's metadata, name and channel)."""
        from .. import __version__

        plan = self.plan
        settings = self.engine_settings or {}
        record = geo.run_metadata(
            task=plan.task,
            preset=settings.get("preset", plan.choices.preset_resolved),
            preset_requested=plan.choices.preset,
            factor=plan.choices.factor,
            parameters=plan.parameters,
            seed=settings.get("fit", {}).get("seed", plan.choices.seed),
            device=settings.get("device", plan.choices.device),
            iterations_run=self.done_iterations,
            iterations_planned=self.total_iterations,
            stop_reason=stop_reason,
            input_name=plan.input_name,
            planes=plan.planes,
            version=__version__,
            engine_settings=settings,
        )
        results = list(self.plane_results)
        if self.plane_done and not self.plane_complete and 0 <= self.last_plane < len(plan.planes):
            # The plane under way when the run ended (stopped, failed, still running).
            results.append({"plane": list(plan.planes[self.last_plane]), "iterations_run": int(self.plane_done),
                            "stop_reason": stop_reason, "best_iteration": self.best_iteration,
                            "backtracks": self.backtracks,
                            "reg_noise_std": settings.get("fit", {}).get("reg_noise_std"),
                            "warm_start": self.warm_from,
                            "warm_start_restarted": bool(settings.get("warm_start_restarted")),
                            "drift": settings.get("drift")})
            if self.last_psnr is not None:
                results[-1]["psnr_vs_reference"] = self.last_psnr
        record["threads"] = settings.get("threads")
        # The stopping rule's best iteration, whose result the output holds when the rule
        # ended the fit; per plane in ``plane_results``.
        record["best_iteration"] = results[-1]["best_iteration"] if len(plan.planes) == 1 and results else None
        record["plane_results"] = results
        if plan.task == "inpaint":
            record["mask_marks"] = settings.get("mask_marks", plan.parameters.get("mask_marks"))
            record["keep_known"] = settings.get("keep_known", True)
        record["constant_planes"] = [list(p) for p in self.constant_planes]
        record["axes"] = plan.axes
        # Whether each plane after the first started from the previous one's network
        # (``None``: one plane); per plane in ``plane_results[...]["warm_start"]``.
        record["warm_start"] = plan.warm_start
        if plan.joint:
            record["channels_restored_jointly"] = [source.name for source in plan.sources]
        record["warnings"] = self.warning_texts()
        if plan.notes:
            record["notes"] = list(plan.notes)
        if self.last_psnr is not None:
            record["psnr_vs_reference"] = self.last_psnr
        if self.error:
            record["error"] = self.error
        # A run stopped (or failed) part way through a stack: the planes it never reached
        # hold zeros in the output, and the record says which.
        record["planes_not_restored"] = [list(plane) for plane in self.planes_not_reached()]
        return {"napari_dip": record}

    def planes_not_reached(self) -> list[tuple[int, ...]]:
        """The planes no snapshot has come for yet (all after the one under way)."""
        return list(self.plan.planes[self.last_plane + 1:]) if self.last_plane >= 0 else list(self.plan.planes)


def status_line(run: Run, snapshot, k: int, rate: float | None) -> str:
    """iteration, speed, ETA, loss, PSNR, backtracks: the status line during a run."""
    parts = [f"iteration {snapshot.iteration}/{snapshot.iterations}", format_rate(rate)]
    if len(run.plan.planes) > 1:
        parts.insert(0, f"plane {k + 1}/{len(run.plan.planes)}" + (" (warm start)" if run.warm_from else ""))
    tile = getattr(snapshot, "tile", None)  # a tiled fit (an image larger than the device)
    if tile is not None and not snapshot.done:
        parts.insert(len(parts) - 2, f"tile {tile[0]}/{tile[1]}")
    elif tile is not None:
        parts.insert(len(parts) - 2, f"{tile[1]} tiles")
    if not snapshot.done:
        parts.append(
            eta_text(
                iteration=snapshot.iteration,
                budget=snapshot.iterations,
                expected_stop=snapshot.expected_stop,
                rate=rate,
                plane=k,
                planes=len(run.plan.planes),
            )
        )
    parts.append(f"loss {snapshot.loss:.2e}")
    if run.last_psnr is not None and run.plan.reference is not None:
        parts.append(f"PSNR {run.last_psnr:.2f} dB")
    if snapshot.backtracks:
        parts.append(f"{snapshot.backtracks} backtracks")
    parts += run.remarks()
    if run.worker is not None and run.worker.is_paused:
        parts.append("paused")  # a snapshot in flight when Pause was pressed
    return " · ".join(parts)
