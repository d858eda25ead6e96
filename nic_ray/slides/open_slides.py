"""The few slides a process keeps open at once, reopened on demand."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from nic_ray.slides.slide import Slide, open_slide


class OpenSlides:
    """The few slides a reader process has open, least recently used closed first."""

    def __init__(self, size: int = 4):
        self._open: OrderedDict[str, Slide] = OrderedDict()
        self._size = size

    def get(self, url: str, mpp: float) -> Slide:
        if url in self._open:
            self._open.move_to_end(url)
            return self._open[url]
        slide = open_slide(url, mpp=None if np.isnan(mpp) else mpp)
        self._open[url] = slide
        if len(self._open) > self._size:
            self._open.popitem(last=False)[1].close()
        return slide

    def drop(self, url: str) -> None:
        slide = self._open.pop(url, None)
        if slide is not None:
            slide.close()
