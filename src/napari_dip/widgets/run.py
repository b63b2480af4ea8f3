"""The state of one run on the main thread: the plane and progress bookkeeping, the PSNR
against a reference, the status line and the record written into the output's metadata.
No Qt here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import layers as geo
from .output import OutputLayer
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
    output: OutputLayer
    worker: object = None
    pbar: object = None
    meter: RateMeter = field(default_factory=RateMeter)
    stop_reason: str | None = None  # "user", "closed", "error", "output layer removed"
    engine_stop_reason: str | None = None
    error: str | None = None
    engine_settings: dict = field(default_factory=dict)
    snapshots_received: int = 0
    plane_done: int = 0  # iterations done in the current plane
    planes_finished: int = 0
    iterations_finished: int = 0  # in the planes before the current one
    plane_complete: bool = False
    last_plane: int = -1
    last_psnr: float | None = None
    closed: bool = False

    @property
    def total_iterations(self) -> int:
        return self.plan.iterations * len(self.plan.planes)

    @property
    def done_iterations(self) -> int:
        """Iterations actually run (planes may stop early with automatic stopping)."""
        return self.iterations_finished + self.plane_done

    @property
    def progress_count(self) -> int:
        """Progress in budget units: a plane that stopped early counts as complete."""
        return self.planes_finished * self.plan.iterations + (0 if self.plane_complete else self.plane_done)

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
        if snapshot.settings:  # the first and the final snapshot say how the fit is made
            self.engine_settings = snapshot.settings
            resolved = snapshot.settings.get("preset")
            if resolved and self.output.layer is None:
                self.plan.choices.preset_resolved = resolved  # names the output
        if snapshot.done:
            self.engine_stop_reason = snapshot.stop_reason
        if k == self.last_plane:
            return False
        self.iterations_finished += self.plane_done
        self.last_plane = k
        self.plane_done = 0
        self.plane_complete = False
        return True

    def count_progress(self, snapshot) -> int:
        """Count a written snapshot; return the progress bar's step."""
        previous = self.progress_count
        self.plane_done = snapshot.iteration
        if snapshot.done:
            self.planes_finished += 1
            self.plane_complete = True
        self.snapshots_received += 1
        return self.progress_count - previous

    def measure_psnr(self, k: int, image) -> None:
        reference = self.plan.reference
        if self.plan.reference_per_plane:
            reference = reference[self.plan.planes[k]]
        self.last_psnr = psnr(reference, image)

    def metadata(self, stop_reason: str) -> dict:
        """The output's metadata: the input's, and under ``napari_dip`` how it was made."""
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
        if self.last_psnr is not None:
            record["psnr_vs_reference"] = self.last_psnr
        if self.error:
            record["error"] = self.error
        return {**plan.base_metadata, "napari_dip": record}


def status_line(run: Run, snapshot, k: int, rate: float | None) -> str:
    """iteration, speed, ETA, loss, PSNR, backtracks: the status line during a run."""
    parts = [f"iteration {snapshot.iteration}/{snapshot.iterations}", format_rate(rate)]
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
    if run.worker is not None and run.worker.is_paused:
        parts.append("paused")  # a snapshot in flight when Pause was pressed
    return " · ".join(parts)
