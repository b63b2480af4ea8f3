"""Where the dock widgets used to live; kept so ``napari_dip._widget.open_with_sample`` (used by
``napari-dip gui``) and older imports keep working. The widgets are in :mod:`napari_dip.widgets`.
"""

from .widgets.dock import (  # noqa: F401 - re-exported
    DeepImagePriorWidget,
    DenoiseWidget,
    InpaintWidget,
    SuperResolveWidget,
    open_with_sample,
)
