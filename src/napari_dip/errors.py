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


class InvertedMaskWarning(InputWarning):
    """An inpainting mask that makes most of the image holes: it probably marks the other
    way. Carries the numbers, so each interface can name its own switch (:meth:`describe`).
    """

    def __init__(self, hole_fraction: float, marks: str = "holes"):
        self.hole_fraction = float(hole_fraction)
        self.marks = marks
        super().__init__(self.describe("pass --mask-known / mask_marks='known'",
                                       "leave out --mask-known / mask_marks='known'"))

    def describe(self, mark_known: str, mark_holes: str) -> str:
        """The message with the interface's words for choosing each convention.

        >>> InvertedMaskWarning(0.9).describe("tick the box", "untick the box")
        'the mask makes 90.0 % of the image holes to fill: it is probably inverted; tick the box if nonzero marks known pixels'
        """
        if self.marks == "holes":
            hint = f"{mark_known} if nonzero marks known pixels"
        else:
            hint = f"{mark_holes} if nonzero marks the holes"
        return f"the mask makes {100 * self.hole_fraction:.1f} % of the image holes to fill: it is probably inverted; {hint}"
