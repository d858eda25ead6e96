"""Fast pixels from tiled TIFF pages: each stored tile's bytes read once and decoded once.

OpenSlide's ``read_region`` spends most of its time compositing, not decoding. Here the boxes
a reader wants (`Target`) are filled straight from decoded tiles; tiles are JPEG (with shared
JPEGTables, as in Aperio), JPEG 2000, deflate, LZW or raw, whatever tifffile and imagecodecs
decode. Reads use ``os.pread`` on one descriptor, so any number of threads can share a page;
imagecodecs releases the GIL.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import imagecodecs
import numpy as np
import tifffile


@dataclass(eq=False, slots=True)
class Target:
    """A box of a level's pixels that a reader wants, and where they go.

    ``pixels`` (height, width, 3) comes ready (white outside the image), or is None to be made
    when a tile first reaches it. ``finish(pixels)``, if given, runs once its last tile is in.
    """

    top: int
    left: int
    height: int
    width: int
    pixels: np.ndarray | None = None
    finish: Callable[[np.ndarray], None] | None = None


def paint_outside(pixels: np.ndarray, top: int, left: int, height: int, width: int) -> None:
    """White where ``pixels``, placed at (top, left), lie outside an image of (height, width)."""
    h, w = pixels.shape[:2]
    # In plain ints: np.clip's overhead (20 µs) was 4% of reading a small slide's edge patches.
    y0, y1 = (min(max(v, 0), h) for v in (-top, height - top))
    x0, x1 = (min(max(v, 0), w) for v in (-left, width - left))
    if (y0, y1, x0, x1) != (0, h, 0, w):
        pixels[:y0] = pixels[y1:] = 255
        pixels[:, :x0] = pixels[:, x1:] = 255


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
        self._jpeg = page.compression == tifffile.COMPRESSION.JPEG
        self._jpegtables = page.jpegtables
        # RGB JPEG is decoded straight into the caller's buffer (tifffile's decode makes a new array
        # per tile), in the colours tifffile's jpeg_decode_colorspace (not public) chooses for such a
        # page: RGB kept as RGB where no JFIF marker says YCbCr, as in Aperio's.
        self._jpeg_rgb = self._jpeg and page.samplesperpixel == 3
        rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and not page.is_jfif
        self._jpeg_colorspace = tifffile.PHOTOMETRIC.RGB if rgb else None
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

    def tile(self, row: int, col: int, out: np.ndarray) -> np.ndarray:
        """``out`` (tile_height, tile_width, 3) uint8, filled with the stored tile at ``row``,
        ``col``; white if absent.

        A tile that cannot be read raises OSError saying where it is."""
        i = row * self._across + col
        count = self._counts[i]
        if count == 0:  # sparse TIFF: OpenSlide shows nothing there, we show white
            out[...] = 255
            return out
        try:
            data = os.pread(self._fd, count, self._offsets[i])
            if len(data) != count:
                raise OSError(f"cut short, {len(data)} of {count} bytes")
            # libjpeg (so OpenSlide too) silently fills a JPEG whose tail is lost; its end marker is not.
            if self._jpeg and not data.endswith(b"\xff\xd9"):
                raise OSError("corrupt, its JPEG data has no end marker")
            if self._jpeg_rgb:
                imagecodecs.jpeg8_decode(
                    data,
                    tables=self._jpegtables,
                    colorspace=self._jpeg_colorspace,
                    outcolorspace=tifffile.PHOTOMETRIC.RGB,
                    out=out,
                )
            else:
                segment = self._decode(data, i, jpegtables=self._jpegtables)[0]
                out[...] = segment.reshape(self.tile_height, self.tile_width, -1)[..., :3]
        except (OSError, ValueError, RuntimeError) as e:  # imagecodecs' errors are RuntimeErrors
            raise OSError(
                f"at x={col * self.tile_width}, y={row * self.tile_height} (tile {row}, {col}): {e}"
            ) from None
        return out

    def fill(self, targets: Sequence[Target], pool: Executor | None = None, threads: int = 1) -> None:
        """Copy into ``targets`` their pixels from the stored tiles, each tile decoded once.

        Tile-major: a tile is copied into every target it reaches as soon as it is decoded,
        while it is still in the CPU's cache, rather than kept for the next row of patches
        (docs/benchmarks.md, read_tiles). A target with no pixels gets them
        (white outside the image) from its first tile, and its ``finish`` runs after its last.
        With a ``pool``, ``threads`` of its threads take a band of tile rows each.
        """
        plan = _plan(self, targets, threads if pool is not None else 1)
        for i in plan.outside:
            self._make_pixels(targets[i])
            self._finish(targets[i])
        if len(plan.bands) == 1:
            self._copy(targets, plan.pieces, plan.bands[0])
            return
        # Targets that reach across bands are written by two threads: made before, finished after.
        for i in plan.across:
            self._make_pixels(targets[i])
        list(pool.map(partial(self._copy, targets, plan.pieces), plan.bands))
        for i in plan.across:
            self._finish(targets[i])

    def _make_pixels(self, t: Target) -> np.ndarray:
        if t.pixels is None:
            t.pixels = np.empty((t.height, t.width, 3), np.uint8)
            paint_outside(t.pixels, t.top, t.left, self.height, self.width)
        return t.pixels

    @staticmethod
    def _finish(t: Target) -> None:
        if t.finish is not None:
            t.finish(t.pixels)
            t.pixels = None  # its finish has them now: a target holds its pixels no longer than needed

    def _copy(self, targets: Sequence[Target], pieces: Sequence[list[int]], band: slice) -> None:
        """`fill` for the pieces in ``band``: each tile decoded once, into one buffer."""
        buffer = np.empty((self.tile_height, self.tile_width, 3), np.uint8)
        decoded = -1
        # This loop runs per piece (2–3 per 128-px patch): all else is worked out beforehand, in numpy.
        for tile_index, i, y0, y1, x0, x1, ty0, ty1, tx0, tx1, last in zip(*(column[band] for column in pieces)):
            if tile_index != decoded:
                tile = self.tile(*divmod(tile_index, self._across), buffer)
                decoded = tile_index
            t = targets[i]
            pixels = t.pixels if t.pixels is not None else self._make_pixels(t)
            pixels[y0:y1, x0:x1] = tile[ty0:ty1, tx0:tx1]
            if last:
                self._finish(t)


class _Plan(NamedTuple):
    outside: list[int]  # targets wholly outside the image
    across: list[int]  # targets whose pieces lie in two or more bands
    bands: list[slice]  # of pieces, at most one per thread, each whole tile rows
    # Per piece, in the tiles' order (row-major): the tile's index, the target's, the piece's box
    # in the target and in the tile, and whether it is the target's last piece within its band.
    pieces: list[list[int]]


def _plan(page: TiledPage, targets: Sequence[Target], threads: int) -> _Plan:
    """The pieces `TiledPage.fill` copies: one per target and stored tile it reaches."""
    box = np.array([(t.top, t.left, t.top + t.height, t.left + t.width) for t in targets], np.int64).reshape(-1, 4)
    top, left = box[:, 0], box[:, 1]
    y0, y1 = box[:, 0::2].clip(0, page.height).T
    x0, x1 = box[:, 1::2].clip(0, page.width).T
    inside = (y0 < y1) & (x0 < x1)
    th, tw = page.tile_height, page.tile_width
    rows = np.where(inside, (y1 - 1) // th + 1 - y0 // th, 0)
    cols = np.where(inside, (x1 - 1) // tw + 1 - x0 // tw, 0)
    # Target by target, its tiles row by row; then all pieces sorted into the tiles' order.
    count = rows * cols
    start = np.cumsum(count) - count
    target = np.repeat(np.arange(len(box)), count)
    nth = np.arange(len(target)) - start[target]
    r = y0[target] // th + nth // cols[target]
    c = x0[target] // tw + nth % cols[target]
    order = np.lexsort((c, r))
    target, r, c = target[order], r[order], c[order]
    position = np.empty_like(order)  # of each target's pieces, in the tiles' order
    position[order] = np.arange(len(order))
    # Bands cut where a tile row begins, alike in pieces.
    row_starts = np.flatnonzero(np.diff(r)) + 1
    cuts = np.zeros(0, np.int64)
    if threads > 1 and len(row_starts):
        wanted = np.searchsorted(row_starts, np.arange(1, threads) * len(r) / threads)
        cuts = np.unique(row_starts[wanted.clip(max=len(row_starts) - 1)])
    edges = [0, *cuts.tolist(), len(r)]
    # A target is finished at its last piece, unless its pieces lie in more than one band.
    is_last = np.zeros(len(r), bool)
    across = np.zeros(0, np.int64)
    if len(r):
        first_last = np.stack(
            [np.minimum.reduceat(position, start[inside]), np.maximum.reduceat(position, start[inside])]
        )
        band = np.searchsorted(cuts, first_last, side="right")
        is_last[first_last[1][band[0] == band[1]]] = True
        across = np.flatnonzero(inside)[band[0] != band[1]]
    py0, py1 = np.maximum(y0[target], r * th), np.minimum(y1[target], r * th + th)
    px0, px1 = np.maximum(x0[target], c * tw), np.minimum(x1[target], c * tw + tw)
    at_y, at_x = top[target], left[target]
    pieces = [
        r * page._across + c,
        target,
        py0 - at_y,
        py1 - at_y,
        px0 - at_x,
        px1 - at_x,
        py0 - r * th,
        py1 - r * th,
        px0 - c * tw,
        px1 - c * tw,
        is_last,
    ]
    return _Plan(
        np.flatnonzero(~inside).tolist(),
        across.tolist(),
        [slice(a, b) for a, b in itertools.pairwise(edges)],
        [column.tolist() for column in pieces],
    )
