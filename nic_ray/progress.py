"""Progress of long steps, one look everywhere: tqdm's bar (count, rate, ETA) on a terminal; in a
log (``ray job logs``, a Ray worker's output, a file) the same line, plain, at most every
``log_every`` seconds and once at the end.

Example::

    for slide in progress(slides, "heatmaps", unit="slide"):
        ...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


class _Log:
    """A log for tqdm: the carriage returns and bare newlines it writes around a bar dropped."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class Progress(tqdm):
    """A tqdm bar that writes whole lines where its output is not a terminal."""

    def __init__(self, *args, log_every: float = 30.0, **kwargs):
        file = kwargs.get("file", sys.stderr)
        self.as_lines = not file.isatty()
        if self.as_lines:
            kwargs["file"] = _Log(file)
            kwargs.setdefault("mininterval", log_every)
            kwargs.setdefault("delay", log_every)  # a step shorter than that writes nothing
            kwargs.setdefault("maxinterval", float("inf"))  # no monitor thread waking a log
            kwargs.setdefault("ascii", True)
        else:
            kwargs.setdefault("file", file)
            kwargs.setdefault("dynamic_ncols", True)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        if not self.as_lines:
            return super().display(msg, pos)
        line = msg or self.format_meter(**{**self.format_dict, "ncols": 0})
        self.fp.write(f"[nic-ray] {line.strip()}\n")
        self.fp.flush()
        return None


def progress(iterable: Iterable | None = None, desc: str = "", total: float | None = None, **kwargs) -> Progress:
    """`Progress` over ``iterable`` (or to ``total``, updated by hand)."""
    return Progress(iterable, desc=desc, total=total, **kwargs)
