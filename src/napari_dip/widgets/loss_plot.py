"""A small live plot of the loss: log scale on y (powers of ten labelled), iteration on x.

Drawn with QPainter: one curve does not justify a plotting library as a dependency, and
napari installs none. The tick choice is in pure functions (:func:`iteration_ticks`,
:func:`log_ticks`), tested without a display.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


def iteration_ticks(first: float, last: float, count: int = 4) -> list[float]:
    """Round iteration numbers (1, 2 or 5 times a power of ten apart) within ``[first, last]``.

    >>> iteration_ticks(0, 1210)
    [0, 500, 1000]
    >>> iteration_ticks(2, 6)
    [2, 4, 6]
    """
    span = max(last - first, 1)
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(int(step), 1)
    start = math.ceil(first / step) * step
    return list(range(int(start), int(last) + 1, step))


def log_ticks(low: float, high: float) -> list[float]:
    """Round values within ``[low, high]`` for a log axis: the powers of ten inside, else
    1, 2 and 5 times them, else the two ends themselves.

    >>> log_ticks(3e-4, 0.02)
    [0.001, 0.01]
    >>> log_ticks(0.003, 0.03)
    [0.005, 0.01, 0.02]
    >>> log_ticks(0.083, 0.098)
    [0.083, 0.098]
    """
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1,), (1, 2, 5)):
        inside = [m * 10.0**e for e in range(first, last + 1) for m in mantissas if low <= m * 10.0**e <= high]
        inside = [float(f"{v:.3g}") for v in inside]
        if len(inside) >= 2:
            return inside
    return [float(f"{low:.2g}"), float(f"{high:.2g}")]


def format_tick(value: float) -> str:
    """Short labels for a narrow dock: ``1e-3``, ``5e-3``, ``8.3e-2``, ``1``.

    >>> format_tick(0.001), format_tick(0.005), format_tick(0.083), format_tick(1.0), format_tick(200.0)
    ('1e-3', '5e-3', '8.3e-2', '1', '2e2')
    """
    mantissa, exponent = f"{value:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exponent = int(exponent)
    return mantissa if exponent == 0 else f"{mantissa}e{exponent}"


class LossPlot(QWidget):
    """Loss against iteration for the plane being restored."""

    MARGIN_LEFT = 24
    MARGIN_BOTTOM = 16

    def __init__(self, parent=None):
        super().__init__(parent)
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (log scale) against iteration, for the plane being restored")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(200, 100)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(120, 90)

    def clear(self) -> None:
        self.iterations.clear()
        self.losses.clear()
        self.update()

    def add(self, iteration: int, loss: float) -> None:
        if math.isfinite(loss) and loss > 0:
            self.iterations.append(iteration)
            self.losses.append(loss)
            self.update()

    def axes(self) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
        """The x and y ticks drawn now, as ``(value, label)`` pairs (empty without data)."""
        if len(self.losses) < 2:
            return [], []
        low, high = min(self.losses), max(self.losses)
        y_ticks = log_ticks(low, high)
        x_ticks = iteration_ticks(self.iterations[0], self.iterations[-1])
        return [(x, str(x)) for x in x_ticks], [(y, format_tick(y)) for y in y_ticks]

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        painter.setFont(font)
        metrics = QFontMetrics(font)
        x_ticks, y_ticks = self.axes()
        left = max([self.MARGIN_LEFT] + [metrics.horizontalAdvance(label) + 9 for _value, label in y_ticks])
        plot = QRectF(left, 4, self.width() - left - 6, self.height() - self.MARGIN_BOTTOM - 6)
        grey = QColor(150, 150, 150)
        painter.setPen(QPen(grey, 1))
        painter.drawRect(plot)
        if not x_ticks:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "loss (log) vs iteration")
            painter.end()
            return
        y_low, y_high = math.log10(min(self.losses)), math.log10(max(self.losses))
        pad = 0.05 * ((y_high - y_low) or 1.0)
        y_low, y_high = y_low - pad, y_high + pad
        x_low, x_high = self.iterations[0], max(self.iterations[-1], self.iterations[0] + 1)

        def to_x(it: float) -> float:
            return plot.left() + plot.width() * (it - x_low) / (x_high - x_low)

        def to_y(log_value: float) -> float:
            return plot.bottom() - plot.height() * (log_value - y_low) / ((y_high - y_low) or 1.0)

        text_height = metrics.height()
        for value, label in y_ticks:
            y = to_y(math.log10(value))
            painter.drawLine(QPointF(plot.left() - 3, y), QPointF(plot.left(), y))
            width = metrics.horizontalAdvance(label)
            painter.drawText(QPointF(plot.left() - 5 - width, y + text_height / 3), label)
        for value, label in x_ticks:
            x = to_x(value)
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 3))
            width = metrics.horizontalAdvance(label)
            x_text = min(max(x - width / 2, plot.left() - 4), self.width() - width - 1)
            painter.drawText(QPointF(x_text, plot.bottom() + 3 + text_height * 0.8), label)
        painter.drawText(QRectF(plot.left() + 4, plot.top() + 1, plot.width() - 8, text_height),
                         Qt.AlignmentFlag.AlignRight, f"loss {self.losses[-1]:.2e}")

        logs = np.log10(np.asarray(self.losses))
        points = QPolygonF([QPointF(to_x(it), to_y(v)) for it, v in zip(self.iterations, logs)])
        painter.setPen(QPen(QColor(80, 170, 255), 1.5))
        painter.drawPolyline(points)
        painter.end()
