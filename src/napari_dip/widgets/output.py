"""The output layer of a run: made (or taken over) at the first snapshot, then updated in place.

One layer per run. It inherits the input's placement in the world (see :mod:`.layers`),
is named after the input, the task and the settings that tell runs apart, and carries
``metadata["napari_dip"]`` saying how it was made. With *replace previous output* the
previous run's layer of the same input and task is taken over instead of adding a new
one (its position in the layer list and display settings stay), but only once the new
run has something to show: a run that fails at once leaves the previous result alone.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from . import layers as geo
from .plan import SHOW_AVERAGE, Plan

#: unique_ids of the layers that runs are writing now: never offered as an input.
ACTIVE_OUTPUTS: set = set()


def same_layer(a, b) -> bool:
    """Identity through napari's PublicOnlyProxy wrappers (each access makes a new proxy)."""
    return a is not None and b is not None and a.unique_id == b.unique_id


def find_layer(viewer, unique_id):
    """The viewer's layer with this ``unique_id``, or ``None``."""
    for layer in viewer.layers:
        if layer.unique_id == unique_id:
            return layer
    return None


def is_output(layer) -> bool:
    """Whether a layer was made by napari-dip (its metadata says how)."""
    return isinstance(layer.metadata.get("napari_dip"), dict)


def output_key(plan: Plan, source=None) -> tuple:
    """Runs with the same key replace each other's output (one key per input layer)."""
    source = plan.input_layer if source is None else source
    return (source.unique_id, plan.task, plan.choices.factor)


class OutputLayer:
    """The layer one run writes for one input layer, and the array behind it.

    ``channel``: for layers restored together as channels, which channel of each
    snapshot (axis 0 of the plane) this layer shows; ``None`` otherwise.
    """

    def __init__(self, viewer, plan: Plan, *, source=None, channel=None, previous=None, on_removed=None):
        self.viewer = viewer
        self.plan = plan
        self.source = plan.input_layer if source is None else source
        self.channel = channel
        self.previous = previous
        self.on_removed = on_removed
        self.data = np.zeros(plan.out_shape, plan.dtype)
        self.layer = None
        self.slot = -1  # the newest filled slot of a kept-snapshots stack
        self.removed = False

    # -- the layer

    def _geometry(self) -> geo.Geometry:
        plan = self.plan
        geometry = geo.output_geometry(geo.layer_geometry(self.source), factor=plan.choices.factor,
                                       plane_offset=plan.plane_offset, order=plan.order)
        if self.plan.keep_snapshots:
            every = self.plan.snapshot_every
            geometry = geo.with_leading_axis(geometry, label="iteration", scale=every, translate=every)
        return geometry

    def _name(self, exclude=None) -> str:
        choices = self.plan.choices
        taken = {layer.name for layer in self.viewer.layers if not same_layer(layer, exclude)}
        return geo.output_name(
            self.source.name,
            self.plan.task,
            choices.factor,
            preset=choices.output_preset,
            seed=choices.seed,
            taken=taken,
        )

    def _metadata(self, record: dict) -> dict:
        """The input's metadata, and under ``napari_dip`` the run's record for this layer."""
        base = geo.input_metadata(self.source)
        record = dict(record["napari_dip"])
        record["input_layer"] = self.source.name
        if self.channel is not None:
            record["channel"] = self.channel
        return {**base, "napari_dip": record}

    def _make(self, metadata: dict) -> None:
        metadata = self._metadata(metadata)
        geometry = self._geometry()
        previous = self.previous
        if previous is not None and not any(same_layer(previous, layer) for layer in self.viewer.layers):
            previous = None
        if previous is not None and previous.ndim == geometry.ndim and bool(previous.rgb) == self.plan.rgb:
            # Take it over: same place in the layer list, same display settings.
            ACTIVE_OUTPUTS.add(previous.unique_id)
            previous.data = self._in_layer_order(self.data)
            for name, value in geometry.as_layer_kwargs().items():
                setattr(previous, name, value)
            previous.name = self._name(exclude=previous)
            previous.metadata = metadata
            self.layer = previous
            return
        index = None
        if previous is not None:  # a different shape of output: a new layer in its place
            index = list(self.viewer.layers).index(previous)
            self.viewer.layers.remove(previous)
        kwargs = {**geometry.as_layer_kwargs(), **geo.input_look(self.source, self.plan.rgb)}
        layer = Image(self._in_layer_order(self.data), name=self._name(), rgb=self.plan.rgb, metadata=metadata,
                      **kwargs)
        # Known as an output before the layer list announces it, so no layer box offers it.
        ACTIVE_OUTPUTS.add(layer.unique_id)
        self.layer = self.viewer.add_layer(layer)
        if index is not None:
            self.viewer.layers.move(len(self.viewer.layers) - 1, index)

    def exists(self) -> bool:
        return self.layer is not None and not self.removed

    def _in_layer_order(self, array: np.ndarray) -> np.ndarray:
        """``array`` (axes as the fit sees them) in the input layer's axis order: a view,
        so what the run writes into ``self.data`` shows in the layer."""
        order = geo.data_order(self.plan.order, self.plan.rgb)
        if order is None:
            return array
        inverse = geo.inverse_order(order)
        if self.plan.keep_snapshots:  # the snapshot axis stays in front
            inverse = (0, *(axis + 1 for axis in inverse))
        return np.transpose(array, inverse)

    # -- writing

    def write(self, k: int, snapshot, metadata: dict):
        """Put plane ``k``'s snapshot into the layer (making it on the first call); return
        the image shown, or ``None`` when the layer is gone."""
        if self.removed:
            return None
        if self.layer is None:
            self._make(metadata)
            self.viewer.layers.events.removed.connect(self._on_layer_removed)
        image = snapshot.average if self.plan.choices.show == SHOW_AVERAGE else snapshot.output
        if self.channel is not None:
            image = image[self.channel]
        target = self.plan.out_index[k]
        if self.plan.keep_snapshots:
            every = self.plan.snapshot_every
            slot = snapshot.iteration // every - (snapshot.iteration % every == 0)
            self.slot = min(slot, self.data.shape[0] - 1)
            self.data[(self.slot, *target)] = image
        else:
            self.data[target] = image
        self.layer.refresh()
        if self.plan.keep_snapshots:
            self._show_slot()
        return image

    def copy_through(self, k: int, image) -> None:
        """Put plane ``k`` in unchanged (a constant plane the engine cannot restore): into
        every slot of a kept-snapshots stack. Before the first snapshot there is no layer
        yet; the array it will show is filled all the same."""
        if self.removed:
            return
        target = self.plan.out_index[k]
        if self.channel is not None:
            image = image[self.channel]
        if self.plan.keep_snapshots:
            self.data[(slice(None), *target)] = image
        else:
            self.data[target] = image
        if self.layer is not None:
            self.layer.refresh()

    def _show_slot(self) -> None:
        # The stack's first axis is the viewer's first here: show the newest snapshot.
        axis = self.viewer.dims.ndim - self.layer.ndim
        step = list(self.viewer.dims.current_step)
        step[axis] = self.slot
        self.viewer.dims.current_step = tuple(step)

    def _on_layer_removed(self, event) -> None:
        if self.removed or not same_layer(getattr(event, "value", None), self.layer):
            return
        self.removed = True
        self.close()
        if self.on_removed is not None:
            self.on_removed()

    # -- the end

    def finish(self, metadata: dict) -> None:
        """Trim an unfilled kept-snapshots stack and write how the layer was made."""
        if not self.exists():
            return
        if self.plan.keep_snapshots and self.slot + 1 < self.data.shape[0]:
            self.layer.data = self._in_layer_order(self.data[: self.slot + 1])
        self.layer.metadata = self._metadata(metadata)
        self.close()

    def close(self) -> None:
        """Stop watching the layer list (idempotent)."""
        if self.layer is not None:
            ACTIVE_OUTPUTS.discard(self.layer.unique_id)
        try:
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        except (TypeError, ValueError, RuntimeError):
            pass


class Outputs:
    """The output layers of one run: one per input layer (several when layers are
    restored together as channels), written, finished and watched together."""

    def __init__(self, parts: list[OutputLayer]):
        self.parts = parts

    @classmethod
    def for_plan(cls, viewer, plan: Plan, previous_of) -> Outputs:
        """One :class:`OutputLayer` per source; ``previous_of(source)`` gives the layer to take over."""
        joint = plan.joint
        return cls([OutputLayer(viewer, plan, source=source, channel=c if joint else None,
                                previous=previous_of(source)) for c, source in enumerate(plan.sources)])

    @property
    def layer(self):
        """The first output layer (``None`` before the first snapshot)."""
        return self.parts[0].layer

    @property
    def layers(self) -> list:
        return [part.layer for part in self.parts if part.layer is not None]

    @property
    def removed(self) -> bool:
        return any(part.removed for part in self.parts)

    def set_on_removed(self, callback) -> None:
        for part in self.parts:
            part.on_removed = callback

    def exists(self) -> bool:
        return any(part.exists() for part in self.parts)

    def names(self) -> str:
        return ", ".join(layer.name for layer in self.layers)

    def write(self, k: int, snapshot, metadata: dict):
        """Write plane ``k``'s snapshot into every layer; return the image shown (all
        channels), or ``None`` when a layer is gone."""
        shown = [part.write(k, snapshot, metadata) for part in self.parts]
        if self.removed:
            return None
        return shown[0] if len(shown) == 1 else np.stack(shown)

    def copy_through(self, k: int, image) -> None:
        for part in self.parts:
            part.copy_through(k, image)

    def finish(self, metadata: dict) -> None:
        for part in self.parts:
            part.finish(metadata)

    def close(self) -> None:
        for part in self.parts:
            part.close()
