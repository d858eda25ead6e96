"""The grid of P×P patches (stride S) that covers a slide at the target resolution.

Cell (y, x) covers target pixels [y·S, y·S+P) × [x·S, x·S+P); the grid is H = ceil(height/S)
by W = ceil(width/S), and patches that run off the image are padded white (DESIGN.md).
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import asdict, dataclass

import numpy as np

from nic_ray.errors import SlideError
from nic_ray.slides.resample import box_downsample, resize_area
from nic_ray.slides.resolution import choose_level
from nic_ray.slides.slide import Slide


@dataclass(frozen=True)
class TileGrid:
    """Where a slide's patches come from: pyramid ``level`` shrunk by ``scale`` to ``mpp``."""

    level: int
    scale: float
    mpp: float
    width: int  # image size at the target resolution
    height: int
    patch_size: int
    stride: int

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): grid rows and columns."""
        return math.ceil(self.height / self.stride), math.ceil(self.width / self.stride)

    def to_dict(self) -> dict:
        return asdict(self)


def tile_grid(
    slide: Slide,
    mpp: float = 0.5,
    patch_size: int = 128,
    stride: int | None = None,
    tolerance: float = 0.1,
) -> TileGrid:
    """The grid of ``slide`` at ``mpp`` µm/px (level chosen by `choose_level`).

    Example::

        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        grid.shape  # (H, W), e.g. (124, 98)
    """
    try:
        choice = choose_level([lv.mpp for lv in slide.levels], mpp, tolerance)
    except ValueError as e:
        raise SlideError(slide.source, str(e)) from None
    level = slide.levels[choice.level]
    return TileGrid(
        level=choice.level,
        scale=choice.scale,
        mpp=choice.mpp,
        width=math.ceil(level.width / choice.scale),
        height=math.ceil(level.height / choice.scale),
        patch_size=patch_size,
        stride=stride or patch_size,
    )


def read_target_region(
    slide: Slide, grid: TileGrid, x: int, y: int, width: int, height: int, cache=None
) -> np.ndarray:
    """RGB (height, width, 3) at the grid's resolution, target-pixel coordinates."""
    f = grid.scale
    if f == 1:
        return slide.read_region(grid.level, x, y, width, height, cache)
    k = round(f)
    if abs(f - k) < 1e-9:
        return box_downsample(slide.read_region(grid.level, x * k, y * k, width * k, height * k, cache), k)
    src = slide.read_region(
        grid.level, round(x * f), round(y * f), round(width * f), round(height * f), cache
    )
    return resize_area(src, height, width)


class _RollingTileCache(dict):
    """Decoded tiles of the current band of cells, plus those of the band before it.

    Cells are read row by row, top to bottom; a stored tile taller than a cell serves two or
    more rows, so it is kept one band longer and decoded once. Threads reading adjacent groups
    of rows share ``border``: each group puts there the tiles of its first row, which the group
    above needs for its last.
    """

    def __init__(self, border: dict):
        super().__init__()
        self._previous: dict = {}
        self._border = border
        self._first_row = True

    def get(self, key, default=None):
        tile = super().get(key)
        if tile is None:
            tile = self._previous.get(key)
            if tile is None:
                tile = self._border.get(key)
            if tile is not None:
                self[key] = tile
        return default if tile is None else tile

    def __setitem__(self, key, tile) -> None:
        super().__setitem__(key, tile)
        if self._first_row:
            self._border[key] = tile

    def roll(self) -> None:
        self._previous = dict(self)
        self.clear()
        self._first_row = False


def read_cells(
    slide: Slide, grid: TileGrid, cells: np.ndarray, pool: Executor | None = None, threads: int = 1
) -> np.ndarray:
    """Patches (n, P, P, 3) uint8 of grid cells ``cells`` (n, 2) as (y, x), in that order.

    Each row's run of adjacent cells is read at once: its patches are cut straight from the stored
    tiles (through a band where patches are resampled or overlap), so each stored tile is decoded
    once however many patches it feeds, and cells not asked for (background) are never decoded.
    With a ``pool``, ``threads`` of its threads read groups of whole rows, and share the tiles
    where their groups meet (decoding releases the GIL).

    Example::

        patches = read_cells(slide, tile_grid(slide), [(0, 0), (0, 1)])  # (2, 128, 128, 3)
    """
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    P = grid.patch_size
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    ordered = cells[order]
    out = np.empty((len(cells), P, P, 3), np.uint8)
    groups = _row_groups(ordered[:, 0], threads if pool is not None else 1)
    border: dict = {}
    caches = [_RollingTileCache(border) for _ in groups]

    def read(span: tuple[int, int], cache: _RollingTileCache) -> None:
        _read_rows(slide, grid, ordered, *span, out, cache)

    # A group's last row needs tiles of the next group's first row. So every group first reads
    # all but its last row (putting its first row's tiles in `border`), and only once all have,
    # its last row: each tile is decoded once, whatever the threads' timing (but where a group is
    # one row, read whole at first: a block with fewer tissue rows than twice the threads).
    run = pool.map if len(groups) > 1 else map
    list(run(read, [(start, last) for start, last, _ in groups], caches))
    list(run(read, [(last, end) for _, last, end in groups], caches))
    if (order[1:] < order[:-1]).any():  # not given in raster order: back to the caller's
        unsorted = np.empty_like(out)
        unsorted[order] = out
        out = unsorted
    return out


def _read_rows(slide: Slide, grid: TileGrid, ordered: np.ndarray, start: int, end: int, out: np.ndarray,
               cache: _RollingTileCache) -> None:
    """Patches of the raster-ordered ``ordered[start:end]`` into ``out[start:end]``."""
    P, S = grid.patch_size, grid.stride
    side_by_side = grid.scale == 1 and S == P  # patches lie side by side in the level: one copy each
    for a, b in _runs(ordered[start:end, 0], ordered[start:end, 1]):
        (y, x0), n = ordered[start + a], b - a
        if side_by_side:
            slide.read_regions(grid.level, x0 * S, y * S, P, P, out[start + a : start + b], cache)
        else:
            band = read_target_region(slide, grid, x0 * S, y * S, (n - 1) * S + P, P, cache)
            # (P, span, 3) → (n, P, P, 3): patch i starts at column i·S of the band.
            windows = np.lib.stride_tricks.sliding_window_view(band, P, axis=1)[:, ::S]
            out[start + a : start + b] = windows.transpose(1, 0, 3, 2)
        if start + b == end or ordered[start + b, 0] != y:
            cache.roll()


def _row_groups(rows: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """(start, last, end) of at most ``n`` groups of whole rows of sorted ``rows``, alike in size;
    ``last`` is where the group's last row begins, ``end`` where the group is one row (or the
    only group: it needs no split)."""
    starts = np.flatnonzero(np.diff(rows)) + 1  # where a new row begins
    if n <= 1 or len(starts) == 0:
        return [(0, len(rows), len(rows))]
    wanted = np.arange(1, n) * len(rows) / n
    cuts = np.unique(starts[np.abs(starts[:, None] - wanted).argmin(0)])
    edges = [0, *cuts.tolist(), len(rows)]
    groups = []
    for start, end in zip(edges[:-1], edges[1:]):
        inside = starts[(starts > start) & (starts < end)]
        groups.append((start, int(inside[-1]) if len(inside) else end, end))
    return groups


def _runs(rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of horizontally adjacent cells in row-major sorted cells."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero((np.diff(rows) != 0) | (np.diff(cols) != 1)) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    return list(zip(edges[:-1], edges[1:]))
