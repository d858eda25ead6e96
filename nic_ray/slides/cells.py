"""Patches of a slide's grid cells, each stored tile decoded once however many patches it feeds.

On the fast tile path (`TiledPage.fill`), a patch at the target resolution is cut straight from
the tiles; where the grid's level must be shrunk, each run of adjacent cells in a row is read as
one band of level pixels, shrunk, and cut into patches. Other levels are read by OpenSlide, a
band per run. Cells not asked for (background) are never decoded.
"""

from __future__ import annotations

from concurrent.futures import Executor
from functools import partial

import numpy as np

from nic_ray.slides.grid import TileGrid, level_box, read_target_region, to_target
from nic_ray.slides.slide import Slide
from nic_ray.slides.tiff_tiles import Target, paint_outside


def read_cells(
    slide: Slide, grid: TileGrid, cells: np.ndarray, pool: Executor | None = None, threads: int = 1
) -> np.ndarray:
    """Patches (n, P, P, 3) uint8 of grid cells ``cells`` (n, 2) as (y, x), in that order.

    With a ``pool``, ``threads`` of its threads read (decoding releases the GIL).

    Example::

        patches = read_cells(slide, tile_grid(slide), [(0, 0), (0, 1)])  # (2, 128, 128, 3)
    """
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    P, S = grid.patch_size, grid.stride
    out = np.empty((len(cells), P, P, 3), np.uint8)
    if grid.level in slide.fast_levels and grid.scale == 1:
        # Out of the image: white, painted first so that no two threads write the same pixels.
        for k in np.flatnonzero((cells * S + P > (grid.height, grid.width)).any(axis=1)):
            paint_outside(out[k], *(cells[k] * S), grid.height, grid.width)
        targets = [Target(y * S, x * S, P, P, patch) for (y, x), patch in zip(cells.tolist(), out)]
        slide.read_targets(grid.level, targets, pool, threads)
        return out
    # A run of cells is one band of target pixels: (its cells' indices, x, y, width).
    bands = [
        (index, int(cells[index[0], 1]) * S, int(cells[index[0], 0]) * S, (len(index) - 1) * S + P)
        for index in _runs(cells)
    ]
    if grid.level in slide.fast_levels:
        targets = []
        for index, x, y, span in bands:
            lx, ly, lw, lh = level_box(grid, x, y, span, P)
            targets.append(Target(ly, lx, lh, lw, finish=partial(_shrink_and_cut, grid, span, out, index)))
        slide.read_targets(grid.level, targets, pool, threads)
    else:

        def read_band(band: tuple[np.ndarray, int, int, int]) -> None:
            index, x, y, span = band
            out[index] = _cut(read_target_region(slide, grid, x, y, span, P), S, P)

        list((pool.map if pool is not None else map)(read_band, bands))
    return out


def _shrink_and_cut(grid: TileGrid, span: int, out: np.ndarray, index: np.ndarray, pixels: np.ndarray) -> None:
    out[index] = _cut(to_target(grid, pixels, span, grid.patch_size), grid.stride, grid.patch_size)


def _cut(band: np.ndarray, S: int, P: int) -> np.ndarray:
    """A band (P, span, 3) into its patches (n, P, P, 3): patch i starts at column i·S."""
    return np.lib.stride_tricks.sliding_window_view(band, P, axis=1)[:, ::S].transpose(1, 0, 3, 2)


def _runs(cells: np.ndarray) -> list[np.ndarray]:
    """Indices into ``cells`` of each run of horizontally adjacent cells, in raster order."""
    if len(cells) == 0:
        return []
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    rows, cols = cells[order].T
    breaks = np.flatnonzero((np.diff(rows) != 0) | (np.diff(cols) != 1)) + 1
    return np.split(order, breaks)
