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
    QAbstractSpinBox,
    QComboBox,
    QFrame,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

#: The most of the screen's height a column asks for as its minimum. Without a minimum, a
#: dock added below another gets a strip of a few lines (Qt gives a new dock in an area its
#: minimum); with all of a tall column's height, a short window cannot hold the dock, which
#: is what the scroll area is for. Three docks one above the other still fit on the screen.
MINIMUM_SCREEN_SHARE = 0.25
#: Boxes whose value a wheel turn changes. Not scroll bars: the column's own bar and a
#: combo box's list must take the wheel.
WHEEL_TAKERS = (QComboBox, QAbstractSpinBox, QSlider)


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


class _RoomKeeper(QObject):
    """Keeps a scroll area's minimum size that of its column: as narrow as the column with
    room for the bar, as tall as the column up to :data:`MINIMUM_SCREEN_SHARE` of the
    screen. The column's content changes (napari's style applied, a section opened), and
    so the bars' ranges; the viewport does not pass the column's new size on, and a dock
    that kept its first width would cut the column's edge off.

    A signal and set sizes, not overridden size hints or an event filter on the column:
    PyQt calls such Python overrides while it tears widgets down at interpreter exit, and
    with them a script that left a viewer open crashed there.
    """

    def __init__(self, area: QScrollArea):
        super().__init__(area)
        self.area = area
        for bar in (area.horizontalScrollBar(), area.verticalScrollBar()):
            bar.rangeChanged.connect(self.follow_column)
        self.follow_column()

    def follow_column(self, *_) -> None:
        column = self.area.widget().minimumSizeHint()
        screen = self.area.screen()
        cap = column.height() if screen is None else int(MINIMUM_SCREEN_SHARE * screen.availableGeometry().height())
        # The frame too: napari's style gives scroll areas a border even without a frame.
        width = column.width() + self.area.verticalScrollBar().sizeHint().width() + 2 * self.area.frameWidth()
        size = QSize(width, min(column.height(), cap))
        if self.area.minimumSize() != size:
            self.area.setMinimumSize(size)


def scroll_column(column: QWidget) -> QScrollArea:
    """A vertical scroll area around ``column``, whose boxes take the wheel only once
    clicked into (:func:`guard_wheel`), and whose minimum size follows the column's."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(column)
    guard_wheel(column)
    _RoomKeeper(area)
    return area


def scrolling(column: QWidget, parent: QWidget) -> QScrollArea:
    """Put ``column`` in a :func:`scroll_column` filling ``parent``; return the area."""
    area = scroll_column(column)
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area
