"""Showing the plane a stack's run is writing: the viewer's sliders follow it from plane to
plane, until the user moves one (then they stay where the user put them). No Qt here.
"""

from __future__ import annotations

import numpy as np


class PlaneFollower:
    """Moves the sliders of a layer's leading axes to each new plane of a run."""

    def __init__(self, viewer, layer, leading: int, order: tuple[int, ...] | None = None):
        self.viewer = viewer
        self.layer = layer
        first = viewer.dims.ndim - layer.ndim
        #: The layer's axes that a plane's index counts along (``order``'s first ``leading``).
        self.layer_axes = tuple(range(layer.ndim) if order is None else order)[:leading]
        self.axes = tuple(first + axis for axis in self.layer_axes)
        self.expected = self._position()  # where the sliders are when the run starts
        self.following = True

    def _position(self) -> tuple:
        step = self.viewer.dims.current_step
        return tuple(step[axis] for axis in self.axes)

    def show(self, index) -> None:
        """Show plane ``index`` (along the layer's leading axes), unless the user moved a slider."""
        if not self.following:
            return
        if self._position() != self.expected:
            self.following = False  # the user took over
            return
        point = np.zeros(self.layer.ndim)
        point[list(self.layer_axes)] = index
        world = np.asarray(self.layer.data_to_world(point))
        for axis, value in zip(self.axes, world[list(self.layer_axes)]):
            self.viewer.dims.set_point(axis, value)
        self.expected = self._position()
