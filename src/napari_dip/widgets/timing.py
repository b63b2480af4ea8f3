"""Rate and ETA of a running fit, as pure functions (no Qt; unit-tested in tests/test_layers.py).

The widget shows where a fit stands in one line: the iteration, the speed and the time
left. Three rules:

* the speed is in iterations per second, or in seconds per iteration below one per second
  (a slow GPU-less paper fit would otherwise read "0.0 it/s");
* the time left counts to the iteration the fit is *expected* to end at
  (:attr:`napari_dip.engine.fit.Snapshot.expected_stop`: where the stopping rule ends it if no
  better iteration comes), not to the budget, which most runs never reach; the budgets of
  the planes still to come are only an upper bound;
* time spent paused does not count: :class:`RateMeter` measures active time only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above; ``?`` when unknown.

    >>> format_duration(42.4), format_duration(522), format_duration(3725), format_duration(float("nan"))
    ('0:42', '8:42', '1:02:05', '?')
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def format_rate(rate: float | None) -> str:
    """Iterations per second, or seconds per iteration when slower than one per second.

    >>> format_rate(12.345), format_rate(0.25), format_rate(None)
    ('12.3 it/s', '4.0 s/it', '? it/s')
    """
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return "? it/s"
    if rate >= 1.0:
        return f"{rate:.1f} it/s"
    return f"{1.0 / rate:.1f} s/it"


def eta_text(
    *,
    iteration: int,
    budget: int,
    expected_stop: int | None,
    rate: float | None,
    plane: int = 0,
    planes: int = 1,
) -> str:
    """The time left of a fit, counted to its expected stop.

    ``iteration`` is where the current plane (0-based ``plane`` of ``planes``) stands,
    ``budget`` the iterations per plane, ``expected_stop`` the iteration the stopping rule
    would end the plane at (``None``: the budget). With more planes to come, their budgets
    give an upper bound for the whole run.

    >>> eta_text(iteration=1000, budget=5000, expected_stop=1210, rate=10.0)
    'ETA 0:21 (stop ~1210)'
    >>> eta_text(iteration=100, budget=500, expected_stop=None, rate=0.5, plane=0, planes=3)
    'ETA 13:20 for plane 1/3, all ≤ 46:40'
    """
    end = budget if expected_stop is None else min(max(expected_stop, iteration), budget)
    if rate is None or not math.isfinite(rate) or rate <= 0:
        text = "ETA ?"
        later = None
    else:
        text = f"ETA {format_duration((end - iteration) / rate)}"
        later = (end - iteration + (planes - plane - 1) * budget) / rate
    if end < budget:
        text += f" (stop ~{end})"
    if planes > 1:
        text += f" for plane {plane + 1}/{planes}"
        if plane < planes - 1 and later is not None:
            text += f", all ≤ {format_duration(later)}"
    return text


@dataclass
class RateMeter:
    """Iterations per second of *active* time: wall time less the time spent paused.

    Feed it the clock (``time.perf_counter()``) at :meth:`start`, :meth:`pause`,
    :meth:`resume` and each :meth:`update`. The rate is measured from the first update on,
    so the network's construction does not count; before a second update it falls back
    to the rate since the start.

    >>> meter = RateMeter()
    >>> meter.start(0.0)
    >>> meter.update(10, now=2.0)   # 10 iterations in 2 s (start-up included)
    5.0
    >>> meter.update(30, now=4.0)   # 20 more in 2 s
    10.0
    >>> meter.pause(4.0); meter.resume(100.0)   # a long pause does not count
    >>> meter.update(70, now=104.0)  # 60 iterations since the first update, in 6 active seconds
    10.0
    """

    started: float = 0.0
    paused_at: float | None = None
    paused_total: float = 0.0
    anchor: tuple[float, int] | None = None

    def start(self, now: float) -> None:
        self.started = now
        self.paused_at = None
        self.paused_total = 0.0
        self.anchor = None

    def pause(self, now: float) -> None:
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            self.paused_total += max(0.0, now - self.paused_at)
            self.paused_at = None

    def active(self, now: float) -> float:
        """Seconds since :meth:`start`, less the pauses (including one going on now)."""
        paused = self.paused_total + (max(0.0, now - self.paused_at) if self.paused_at is not None else 0.0)
        return max(0.0, now - self.started - paused)

    def update(self, done: int, now: float) -> float | None:
        """Record that ``done`` iterations are done in all; return the rate, or ``None``."""
        active = self.active(now)
        if self.anchor is None:
            self.anchor = (active, done)
            return done / active if active > 0 and done > 0 else None
        anchor_time, anchor_done = self.anchor
        if active > anchor_time and done > anchor_done:
            return (done - anchor_done) / (active - anchor_time)
        return done / active if active > 0 and done > 0 else None
