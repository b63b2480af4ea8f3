"""The engine: torch, no Qt, no napari.

Each module does one job, as in deepinv's separation of concerns:

* :mod:`~napari_dip.engine.forward` - what degraded the image (identity, downsampler, mask);
* :mod:`~napari_dip.engine.networks` - the untrained network, the prior;
* :mod:`~napari_dip.engine.fit` - the solver loop (Adam, averaging, backtracking, snapshots);
* :mod:`~napari_dip.engine.stopping` - when to stop without ground truth;
* :mod:`~napari_dip.engine.presets` - the paper's settings and the CPU-friendly ones;
* :mod:`~napari_dip.engine.devices` - device choice, memory and the CPU thread policy;
* :mod:`~napari_dip.engine.tiling` - images larger than the device: overlapping tiles, blended
  without seams.

The numpy API (:mod:`napari_dip.restore`), files (:mod:`napari_dip.io`) and the command
line sit above it; the napari widgets (:mod:`napari_dip.widgets`) above those.
"""
