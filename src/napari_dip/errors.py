"""Exceptions raised for input the engine cannot restore.

They subclass the built-in exceptions a caller would already catch (``ValueError``,
``MemoryError``), so code written against plain numpy functions keeps working, while the
command line and the widget can tell a user's mistake from a bug and show one clear line.
"""


class InputError(ValueError):
    """The image, mask or a parameter cannot be used; the message says why and what to do."""


class DeviceMemoryError(MemoryError):
    """The fit does not fit in the memory of the chosen device."""
