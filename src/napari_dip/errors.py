"""Exceptions raised for input the engine cannot restore, and the warning for input it
restores but probably should not have been given.

They subclass the built-in exceptions a caller would already catch (``ValueError``,
``MemoryError``, ``UserWarning``), so code written against plain numpy functions keeps
working, while the command line and the widget can tell a user's mistake from a bug and
show one clear line.
"""


class InputError(ValueError):
    """The image, mask or a parameter cannot be used; the message says why and what to do."""


class ConstantImageError(InputError):
    """The image holds a single value (per channel): there is nothing to restore.

    A subclass so that a caller restoring many planes (a Z-stack with blank planes) can
    copy such a plane through instead of stopping.
    """


class DeviceMemoryError(MemoryError):
    """The fit does not fit in the memory of the chosen device."""


class InputWarning(UserWarning):
    """The input is usable but looks like a mistake (e.g. an inverted inpainting mask)."""
