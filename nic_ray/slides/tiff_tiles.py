"""Fast pixels from tiled TIFF pages: each stored tile's bytes read once and decoded once.

OpenSlide's ``read_region`` spends most of its time compositing, not decoding. Here a region,
or a row of patches, is cut from decoded tiles directly; tiles are JPEG (with shared JPEGTables,
as in Aperio), JPEG 2000, deflate, LZW or raw, whatever tifffile and imagecodecs decode. Reads
use ``os.pread`` on one descriptor, so any number of threads can share a page; imagecodecs
releases the GIL.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

import numpy as np
import tifffile

# Decoded tiles of one reader call (or of a run of calls along a band), keyed by (row, col).
TileCache = MutableMapping[tuple[int, int], np.ndarray]


class TiledPage:
    """One pyramid level stored as a tiled, 8-bit, RGB(A) TIFF page."""

    def __init__(self, path: str, page: tifffile.TiffPage):
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        self.tile_width = int(page.tilewidth)
        self.tile_height = int(page.tilelength)
        self.index = page.index
        self._across = -(-self.width // self.tile_width)
        self._offsets = tuple(page.dataoffsets)
        self._counts = tuple(page.databytecounts)
        self._decode = page.decode
        self._jpegtables = page.jpegtables
        self._jpeg = page.compression == tifffile.COMPRESSION.JPEG
        self._fd = os.open(path, os.O_RDONLY)

    @staticmethod
    def supports(page: tifffile.TiffPage) -> bool:
        """Whether the fast path can read ``page`` exactly as OpenSlide does."""
        return bool(
            page.is_tiled
            and page.tiledepth == 1
            and page.bitspersample == 8
            and page.samplesperpixel in (3, 4)
            and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
            and page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        )

    @property
    def data_end(self) -> int:
        """The file size this page needs: the end of its last tile's bytes."""
        return max((o + c for o, c in zip(self._offsets, self._counts)), default=0)

    def close(self) -> None:
        os.close(self._fd)

    def tile(self, row: int, col: int) -> np.ndarray:
        """The stored tile (tile_height, tile_width, 3) at ``row``, ``col``; white if absent."""
        i = row * self._across + col
        count = self._counts[i]
        if count == 0:  # sparse TIFF: OpenSlide shows nothing there, we show white
            return np.full((self.tile_height, self.tile_width, 3), 255, np.uint8)
        data = os.pread(self._fd, count, self._offsets[i])
        if len(data) != count:
            raise OSError(f"tile ({row}, {col}) is cut short: {len(data)} of {count} bytes")
        # libjpeg (so OpenSlide too) silently fills a JPEG whose tail is lost; its end marker is not.
        if self._jpeg and not data.endswith(b"\xff\xd9"):
            raise OSError(f"tile ({row}, {col}) is corrupt: its JPEG data has no end marker")
        segment = self._decode(data, i, jpegtables=self._jpegtables)[0]
        return segment.reshape(self.tile_height, self.tile_width, -1)[..., :3]

    def read_regions(
        self, x: int, y: int, width: int, height: int, out: np.ndarray, cache: TileCache | None = None
    ) -> np.ndarray:
        """``len(out)`` regions of (height, width) side by side from (x, y), into ``out``
        (n, height, width, 3); white outside the image.

        Each stored tile goes straight into the regions it covers: patches in a row are cut
        from their tiles with one copy, not assembled into a band and then copied again.
        """
        n = len(out)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + n * width, self.width), min(y + height, self.height)
        if (x0, y0, x1, y1) != (x, y, x + n * width, y + height):
            out[...] = 255  # tiles cover the whole image: only what reaches outside needs this
        if x0 >= x1 or y0 >= y1:
            return out
        tw, th = self.tile_width, self.tile_height
        for row in range(y0 // th, (y1 - 1) // th + 1):
            ty0 = row * th
            ry0, ry1 = max(y0, ty0), min(y1, ty0 + th)
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                key = (row, col)
                tile = cache.get(key) if cache is not None else None
                if tile is None:
                    tile = self.tile(row, col)
                    if cache is not None:
                        cache[key] = tile
                # This tile's columns [rx0, rx1) of the wanted rows, split where regions meet.
                tx0 = col * tw
                rx0, rx1 = max(x0, tx0), min(x1, tx0 + tw)
                src, dst = tile[ry0 - ty0 : ry1 - ty0], out[:, ry0 - y : ry1 - y]
                for k in range((rx0 - x) // width, (rx1 - 1 - x) // width + 1):
                    left = x + k * width
                    a, b = max(rx0, left), min(rx1, left + width)
                    dst[k, :, a - left : b - left] = src[:, a - tx0 : b - tx0]
        return out
