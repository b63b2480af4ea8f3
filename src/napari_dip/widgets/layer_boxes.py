"""The form's layer boxes (magicgui combo boxes): the image to restore, the inpainting mask
and the optional reference, listed top layer first like napari's layer list.

They follow the layer list through :meth:`LayerBoxes.reset_choices`, which napari calls
for a docked widget on every layer insert, removal, move and rename. The chosen layer
stays chosen across renames and moves (magicgui matches choices by name). When it goes
away, the image box falls back to the active or top *ordinary* image, never to an output
of napari-dip: restoring a restoration by accident is what the old picker did when the
input was removed mid-run. Layers a run is writing are not offered at all; finished
outputs are, for a deliberate second pass (super-resolving a denoised image).
"""

from __future__ import annotations

from magicgui.widgets import ComboBox
from napari.layers import Image, Labels

from .output import ACTIVE_OUTPUTS, is_output


class LayerBox(ComboBox):
    """A combo box of layers; its empty choice reads "none"."""

    null_string = "none"


def _matching(box, layer):
    """The box's choice for ``layer`` (choices are fresh proxies), or ``None``."""
    if layer is None:
        return None
    return next((c for c in box.choices if c is not None and c.unique_id == layer.unique_id), None)


class LayerBoxes:
    """The image, mask (inpainting only) and reference boxes of one form."""

    def __init__(self, viewer, *, with_mask: bool):
        self.viewer = viewer
        self.image = LayerBox(label="Image", choices=self._images, nullable=True,
                              tooltip="The layer to restore; it is never modified")
        self.mask = None
        if with_mask:
            self.mask = LayerBox(label="Mask", choices=self._labels,
                                 tooltip="Labels layer marking the holes to fill (nonzero = hole)")
        self.reference = LayerBox(label="Reference", choices=self._images, nullable=True,
                                  tooltip="Optional clean image: the status line shows the PSNR against it")

    def _layers(self, kind) -> list:
        return [layer for layer in reversed(list(self.viewer.layers)) if isinstance(layer, kind)]

    def _images(self, widget=None) -> list:
        return [(layer.name, layer) for layer in self._layers(Image) if layer.unique_id not in ACTIVE_OUTPUTS]

    def _labels(self, widget=None) -> list:
        return [(layer.name, layer) for layer in self._layers(Labels)]

    def default_image(self):
        """The active layer if it is an ordinary image, else the top one; never an output."""
        candidates = [layer for _name, layer in self._images() if not is_output(layer)]
        active = self.viewer.layers.selection.active
        for layer in candidates:
            if active is not None and layer.unique_id == active.unique_id:
                return layer
        return candidates[0] if candidates else None

    def reset_choices(self, *args) -> None:
        """Follow the layer list, keeping each box's layer while it exists."""
        try:
            for box in (self.image, self.mask, self.reference):
                if box is None:
                    continue
                previous = box.value
                box.reset_choices()
                kept = _matching(box, previous)
                if kept is not None:
                    if box.value is None or box.value.unique_id != kept.unique_id:
                        box.value = kept
                elif box is self.image and box.value is None:
                    default = _matching(box, self.default_image())
                    if default is not None:
                        box.value = default
        except RuntimeError:  # the Qt widgets are gone (the viewer is closing)
            return
