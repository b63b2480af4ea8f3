"""The napari dock widgets, in small parts (see DEVELOPERS.md, "How the widget is structured").

Nothing is imported here, so the Qt-free parts (:mod:`.layers`, :mod:`.timing`,
:mod:`.prefs`, :mod:`.worker`) import without Qt.

========================  ==============================================================
``dock``                  the three dock widgets, composed of the parts below
``form``                  the magicgui form: task options, device, advanced settings
``layer_boxes``           the image, mask and reference boxes that follow the layer list
``controller``            Run/Pause/Stop, the thread worker, progress bar, messages
``run``                   one run's bookkeeping, status line and metadata record (no Qt)
``output``                the output layer: made or taken over, written in place
``loss_plot``             the live loss curve with labelled axes
``plan``                  form values and layers -> what a run needs (no Qt)
``worker``                the worker thread's function (numpy only)
``follow``                the sliders follow the plane a stack's run writes
``layers``                output names, plane bookkeeping, geometry, metadata (pure)
``timing``                rate and ETA text (pure)
``prefs``                 the plugin's remembered settings and the device fallback
``batch``                 the Batch widget: one task over many layers or a folder
========================  ==============================================================
"""
