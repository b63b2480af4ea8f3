"""A dock's column that scrolls in a window shorter than it, without the mouse wheel
changing the settings it passes over.

In a scrolling column, Qt gives a wheel turn over a combo box, spin box or slider to that
box, which changes its value (the preset, the iterations) instead of scrolling: a user
scrolling down to Run would change settings unseen. :func:`guard_wheel` makes those boxes
take the wheel only once clicked or tabbed into; otherwise the turn goes on to the column.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QFrame,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

#: The most of the screen's height a column asks for as its minimum. Without a minimum, a
#: dock added below another gets a strip of a few lines (Qt gives a new dock in an area its
#: minimum); with all of a tall column's height, a short window cannot hold the dock, which
#: is what the scroll area is for. Two docks one above the other still fit on the screen.
MINIMUM_SCREEN_SHARE = 0.4
#: Boxes whose value a wheel turn changes.
WHEEL_TAKERS = (QComboBox, QAbstractSpinBox, QAbstractSlider)


class _WheelGuard(QObject):
    """Passes a wheel turn over an unfocused box on to its parents (the scroll area)."""

    def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Wheel and isinstance(watched, QWidget) and not watched.hasFocus():
            # Ignored and filtered: the box never sees it, and Qt offers it to the parents.
            event.ignore()
            return True
        return False


def guard_wheel(root: QWidget) -> None:
    """Guard every combo box, spin box and slider under ``root`` (again for boxes added
    since: a box is guarded once)."""
    guard = root.findChild(_WheelGuard)
    if guard is None:
        guard = _WheelGuard(root)
    for child in root.findChildren(QWidget):
        if isinstance(child, WHEEL_TAKERS) and not child.property("napari_dip_wheel_guarded"):
            # A wheel turn must not give focus either, or the next turn would change it.
            child.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            child.installEventFilter(guard)
            child.setProperty("napari_dip_wheel_guarded", True)


class ScrollColumn(QScrollArea):
    """A vertical scroll area around ``column``, as narrow as the column and its bar.

    It also gives the column the height its wrapped lines need at the dock's width: a
    dock alone does not ask its widget for height for width.
    """

    def __init__(self, column: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(column)
        guard_wheel(column)

    def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
        # The column's content changed (napari's style applied, a section opened): ask the
        # dock for room again, or it keeps the width it had and cuts the column's edge off.
        # A scroll area's viewport does not pass that request on by itself.
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def _bar_width(self) -> int:
        return self.verticalScrollBar().sizeHint().width()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """As narrow as the column with room for its bar; as tall as the column, up to
        :data:`MINIMUM_SCREEN_SHARE` of the screen."""
        column = self.widget().minimumSizeHint()
        screen = self.screen()
        cap = column.height() if screen is None else int(MINIMUM_SCREEN_SHARE * screen.availableGeometry().height())
        height = max(super().minimumSizeHint().height(), min(column.height(), cap))
        return QSize(column.width() + self._bar_width(), height)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """The column's width with room for its bar, and its height."""
        column = self.widget().sizeHint()
        return QSize(self.minimumSizeHint().width(), column.height())


def scrolling(column: QWidget, parent: QWidget) -> ScrollColumn:
    """Put ``column`` in a :class:`ScrollColumn` filling ``parent``; return the area."""
    area = ScrollColumn(column)
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area
