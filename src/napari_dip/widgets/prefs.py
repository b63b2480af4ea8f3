"""The plugin's remembered settings (``configurations`` in napari.yaml) and the device choice.

napari keeps them under *Preferences > Plugins*; the widgets read them when they are
created and write the device and preset back when the user changes them. A remembered
device that does not exist on this machine (``cuda`` saved on a laptop) falls back to
``auto``, and :func:`device_choice` says so, for the widget's device line.
"""

from __future__ import annotations

PLUGIN_NAME = "napari-dip"


def plugin_settings():
    """The plugin's settings object, or ``None`` when napari cannot give it.

    ``None`` when the plugin is used without being discovered by npe2: the widgets then
    start from built-in defaults and remember nothing.
    """
    try:
        from napari.settings import get_plugin_settings

        return get_plugin_settings(PLUGIN_NAME).defaults
    except Exception:  # noqa: BLE001 - any failure means "no remembered settings"
        return None


def recall(settings, name: str, default):
    """A remembered value, or ``default``."""
    if settings is None:
        return default
    value = getattr(settings, name, None)
    return default if value is None else value


def remember(settings, name: str, value) -> None:
    """Write a value back; a value the settings schema refuses is not remembered."""
    if settings is None:
        return
    try:
        setattr(settings, name, value)
    except Exception:  # noqa: BLE001 - validation errors of the settings model
        pass


def device_choice(saved: str | None, available: list[str]) -> tuple[str, str]:
    """The device to preselect from a remembered one, and a note when it had to change.

    ``cuda`` means the first CUDA device; a device missing here becomes ``auto``.

    >>> device_choice("cpu", ["auto", "cpu"])
    ('cpu', '')
    >>> device_choice("cuda", ["auto", "cuda:0", "cpu"])
    ('cuda:0', '')
    >>> device_choice("cuda", ["auto", "cpu"])
    ('auto', "the saved device 'cuda' is not available here; using auto")
    """
    name = (saved or "auto").strip().lower()
    if name in available:
        return name, ""
    if name == "cuda" and "cuda:0" in available:
        return "cuda:0", ""
    return "auto", f"the saved device {saved!r} is not available here; using auto"
