"""The three dock widgets: the form, a collapsed Advanced section, the run controls and the
loss plot, stacked in a narrow column.

torch is imported on first use (creating a widget asks the engine for devices and preset
defaults), never when napari imports this module to list the plugin's contributions.
"""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QDockWidget, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

from . import prefs
from .controller import RunControls, RunController
from .form import TaskForm
from .loss_plot import LossPlot
from .plan import make_plan
from .scrolling import scrolling

TITLES = {"denoise": "Denoise", "super-resolve": "Super-resolve", "inpaint": "Inpaint"}


class DeepImagePriorWidget(QWidget):
    """Restore an Image layer with a deep image prior, watching the result improve."""

    TASK = "denoise"

    def __init__(self, napari_viewer: napari.viewer.Viewer, task: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.task = task or self.TASK
        self.form = TaskForm(self.viewer, self.task, prefs.plugin_settings())
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(self.form.advanced.native)
        self.controls = RunControls()
        self.loss_plot = LossPlot()
        self.controller = RunController(self.viewer, self.controls, self.loss_plot, TITLES[self.task])
        self.controls.run_button.changed.connect(self.start)
        self.controls.pause_button.changed.connect(self.controller.toggle_pause)
        self.controls.stop_button.changed.connect(self.controller.stop)

        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(4, 4, 4, 4)
        for part in (self.form.basic.native, self.form.device_info.native, self.advanced, self.controls.native,
                     self.loss_plot):
            layout.addWidget(part)
        layout.addStretch(1)
        # A window shorter than the column scrolls it instead of cutting off Run and the
        # status line (the boxes it passes over keep their values: scrolling.guard_wheel).
        self.scroll_area = scrolling(column, self)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self._aligned = False

    def showEvent(self, event):  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._aligned:  # napari's style sheet applies once the widget is shown
            self._aligned = True
            self.form.align_labels()

    def reset_choices(self, *args) -> None:
        """Called by napari when layers are added, removed, moved or renamed."""
        self.form.reset_choices()

    @property
    def run_state(self):
        """The run going on, or ``None``."""
        return self.controller.run

    @property
    def status(self) -> str:
        return self.controls.status.value

    def start(self, *args) -> None:
        """Run: plan from the form (reporting what is wrong), then start the worker."""
        if self.controller.run is not None:
            return
        try:
            plan = make_plan(self.viewer, self.form.choices())
        except ValueError as error:  # InputError: the message is for the user
            self.controller.report_error(str(error))
            return
        self.controller.start(plan)

    def toggle_pause(self) -> None:
        self.controller.toggle_pause()

    def stop(self) -> None:
        self.controller.stop()


class DenoiseWidget(DeepImagePriorWidget):
    """Remove noise from an Image layer."""

    TASK = "denoise"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "denoise")


class SuperResolveWidget(DeepImagePriorWidget):
    """Upscale an Image layer 2, 3, 4 or 8 times."""

    TASK = "super-resolve"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "super-resolve")


class InpaintWidget(DeepImagePriorWidget):
    """Fill the holes of an Image layer marked in a Labels layer."""

    TASK = "inpaint"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "inpaint")


WIDGET_CLASSES = {"denoise": DenoiseWidget, "super-resolve": SuperResolveWidget, "inpaint": InpaintWidget}


SAMPLE_FOR_TASK = {"denoise": "noisy_camera", "super-resolve": "noisy_camera", "inpaint": "inpainting"}
#: The name napari's *Plugins* menu gives the dock ("<widget> (<plugin display name>)"):
#: docking under it keeps that menu's check mark right and avoids a second copy.
DOCK_NAME = "{} (Deep Image Prior)"


def _dock_of(widget):
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def show_widget(viewer, task: str):
    """Dock the widget for ``task`` unless it is docked already, then show it and bring it
    to the front. Returns ``(dock, widget)``.

    napari's own *Plugins* menu entries toggle a dock (choosing an open one hides it);
    the plugin's *Layers > Filter > Deep Image Prior* entries and ``napari-dip gui`` call
    this instead.
    """
    widget_class = WIDGET_CLASSES[task]
    for widget in viewer.window.dock_widgets.values():
        if isinstance(widget, widget_class):
            dock = _dock_of(widget)
            break
    else:
        widget = widget_class(viewer)
        dock = viewer.window.add_dock_widget(widget, name=DOCK_NAME.format(TITLES[task]))
    dock.show()
    dock.raise_()
    return dock, widget


def show_denoise(viewer: napari.viewer.Viewer) -> None:
    show_widget(viewer, "denoise")


def show_super_resolve(viewer: napari.viewer.Viewer) -> None:
    show_widget(viewer, "super-resolve")


def show_inpaint(viewer: napari.viewer.Viewer) -> None:
    show_widget(viewer, "inpaint")


def open_with_sample(viewer=None, task: str = "denoise"):
    """Open the plugin's sample for ``task`` and dock its widget; return ``(viewer, widget)``.

    For a command line entry (``napari.run()`` afterwards) or a notebook: a new user sees
    the sample loaded and only has to press Run. Creates a viewer when none is given.
    """
    if task not in TITLES:
        raise ValueError(f"unknown task {task!r}; choose one of {tuple(TITLES)}")
    if viewer is None:
        viewer = napari.Viewer(title="napari-dip")
    viewer.open_sample(prefs.PLUGIN_NAME, SAMPLE_FOR_TASK[task])
    _dock, widget = show_widget(viewer, task)
    return viewer, widget
