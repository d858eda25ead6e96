"""Errors for expected mistakes: each message is one line naming the input and what is wrong."""


class NicError(Exception):
    """Base class of the errors that nic-ray reports as one line, without a traceback."""


def first_line(error: Exception) -> str:
    """What a library's ``error`` says, in one short line, to go inside a `NicError`'s.

    >>> first_line(OSError("Connection reset\\nby peer"))
    'Connection reset'
    """
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


class SlideError(NicError):
    """A slide cannot be opened or read: missing, empty, truncated, corrupt, no µm/px."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class EncoderError(NicError):
    """An encoder name, checkpoint or import path cannot be loaded."""


class StoreError(NicError):
    """A store that cannot be used as asked: wrong configuration, not a store, no such slide, corrupt."""
