"""The optional trust layers of a run: the runs' per-pixel spread (``uncertainty``, with
two runs or more) and the denoising residual (:func:`napari_dip.residual.noise_residual`),
kept from each plane's final snapshot and added next to the output when the run ends,
named after the input and recording how they were made, as the output does.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from . import layers as geo

#: What each kind of layer holds, for its metadata.
CONTENT = {
    "uncertainty": "per-pixel standard deviation of the runs' results, in the image's units: large where the "
                   "runs disagree, i.e. where the data do not determine the result",
    "residual": "input minus result in the noise model's units (divided by the model's standard deviation "
                "for Poisson-Gaussian noise): structure-free noise for a good restoration",
}
COLORMAPS = {"uncertainty": "magma", "residual": "gray"}


class TrustMaps:
    """The trust maps one run asked for (``plan.trust``), filled plane by plane."""

    def __init__(self, plan):
        self.plan = plan
        self.arrays: dict = {}  # kind -> float32 array, the fit's axis order, no snapshot axis
        self.planes_done = 0

    def note(self, k: int, snapshot) -> None:
        """Keep plane ``k``'s maps from its final snapshot."""
        for kind in self.plan.trust:
            image = snapshot.uncertainty if kind == "uncertainty" else self._residual(k, snapshot)
            if image is None:
                continue
            array = self.arrays.get(kind)
            if array is None:
                # A volume (3D fit) fills the whole output at once; a plane goes under the leading axes.
                leading = () if self.plan.choices.volumetric else self.plan.out_shape[
                    1 if self.plan.keep_snapshots else 0 :][: len(self.plan.out_index[k])]
                array = self.arrays[kind] = np.zeros((*leading, *image.shape), np.float32)
            array[self.plan.out_index[k]] = image
        self.planes_done += 1

    def _residual(self, k: int, snapshot):
        from ..axes import layout_for
        from ..residual import noise_residual

        data, axes, _, _, stack, _, api_planes = self.plan.fit_args
        observed = data
        if stack and not self.plan.choices.volumetric:
            layout = layout_for(np.shape(data), axes)
            observed, axes = layout.plane(data, tuple(api_planes[k])), layout.plane_axes
        return noise_residual(observed, snapshot.average, (snapshot.settings or {}).get("noise"), axes=axes)

    def add_layers(self, viewer, outputs, record: dict, previous: dict) -> list:
        """A layer per kind and output part (a channel group: one each); ``previous``
        maps ``(output key, kind)`` to a layer to replace (and is updated). Returns the layers."""
        from .output import find_layer, output_key

        made = []
        if not self.planes_done:
            return made
        for part in outputs.parts:
            if not part.exists():
                continue
            for kind, array in self.arrays.items():
                data = array
                if part.channel is not None:  # the plane's channel axis follows the leading ones
                    data = np.take(array, part.channel, axis=len(self.plan.out_index[0]))
                key = (output_key(self.plan, part.source), kind)
                old = find_layer(viewer, previous[key]) if self.plan.choices.replace and key in previous else None
                layer = self._layer(viewer, part, kind, data, record, exclude=old)
                index = None
                if old is not None:
                    index = list(viewer.layers).index(old)
                    viewer.layers.remove(old)
                viewer.add_layer(layer)
                if index is not None:
                    viewer.layers.move(len(viewer.layers) - 1, index)
                previous[key] = layer.unique_id
                made.append(layer)
        return made

    def _layer(self, viewer, part, kind: str, data: np.ndarray, record: dict, exclude=None) -> Image:
        plan, source = self.plan, part.source
        order = geo.data_order(plan.order, plan.rgb)
        if order is not None:
            data = np.transpose(data, geo.inverse_order(order))
        geometry = geo.output_geometry(geo.layer_geometry(source), factor=plan.choices.factor,
                                       plane_offset=plan.plane_offset, order=plan.order)
        label = plan.task + (f" x{plan.choices.factor}" if plan.choices.factor else "") + f" {kind}"
        taken = {layer.name for layer in viewer.layers if exclude is None or layer.unique_id != exclude.unique_id}
        name = geo.output_name(source.name, label, preset=plan.choices.output_preset, seed=plan.choices.seed,
                               taken=taken)
        base = geo.input_metadata(source)
        made = {**record["napari_dip"], "input_layer": source.name, "content": kind, "content_is": CONTENT[kind],
                "result_layer": part.layer.name, "planes_done": self.planes_done}
        if part.channel is not None:
            made["channel"] = part.channel
        if kind == "residual":
            spread = float(np.quantile(np.abs(data), 0.995)) if data.size else 0.0
            limits = (-spread, spread) if spread > 0 else (-1.0, 1.0)
        else:
            top = float(data.max()) if data.size else 0.0
            limits = (0.0, top if top > 0 else 1.0)
        rgb = plan.rgb and data.shape[-1] in (3, 4)
        kwargs = {} if rgb else {"colormap": COLORMAPS[kind]}
        return Image(data, name=name, rgb=rgb, metadata={**base, "napari_dip": made}, contrast_limits=limits,
                     blending=source.blending, **kwargs, **geometry.as_layer_kwargs())
