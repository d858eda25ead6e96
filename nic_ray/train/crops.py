"""Crops of compressed grids: where to centre them, and reading them.

Training crops are centred by a pmf over tissue cells proportional to the squared distance to
the nearest background cell (NIC): crops land deep in tissue more often than on its edge.
Test crops sit at T evenly spaced positions in the raster order of tissue cells. Either kind is
then moved to hold as much of the grid as it can (`keep_on_grid`): a crop no longer than the
grid stays on it, a crop longer than the grid holds all of it. What a crop holds beyond the grid
is padded with zeros, the value of background cells.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from nic_ray.dihedral import dihedral, inverse
from nic_ray.store.grid_reader import GridReader


def crop_pmf(tissue: np.ndarray, threshold: int = 26) -> np.ndarray:
    """(H, W) probabilities of crop centres: squared distance to background, summing to 1.

    Outside the grid counts as background. A grid without tissue gives a uniform pmf.
    """
    inside = np.pad(tissue >= threshold, 1)  # the border: background
    distance = distance_transform_edt(inside)[1:-1, 1:-1] ** 2
    total = distance.sum()
    return distance / total if total > 0 else np.full(tissue.shape, 1 / tissue.size)


def sample_centres(pmf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (y, x) crop centres drawn from ``pmf``."""
    flat = rng.choice(pmf.size, size=n, p=pmf.ravel())
    return np.stack(np.unravel_index(flat, pmf.shape), axis=1)


def evenly_spaced_centres(tissue: np.ndarray, count: int = 10, threshold: int = 26) -> np.ndarray:
    """(count, 2) centres at evenly spaced positions in the raster order of tissue cells."""
    cells = np.argwhere(tissue >= threshold)
    if len(cells) == 0:
        return np.array([[tissue.shape[0] // 2, tissue.shape[1] // 2]] * count)
    picks = np.linspace(0, len(cells) - 1, count).round().astype(int)
    return cells[picks]


def keep_on_grid(centres: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """``centres`` (n, 2) moved, each axis on its own, so that a crop of ``size`` lies on the grid
    of ``shape`` where the grid is at least that long, and holds the whole axis where it is shorter.

    >>> keep_on_grid(np.array([[0, 5], [9, 5]]), (10, 4), 6).tolist()  # crops of 6 on a 10 × 4 grid
    [[3, 3], [7, 3]]
    """
    half, slack = size // 2, np.asarray(shape) - size
    return np.clip(np.asarray(centres) - half, np.minimum(slack, 0), np.maximum(slack, 0)) + half


def read_crop(
    grid,
    orientation: int,
    centre: tuple[int, int],
    size: int,
    dtype=np.float32,
    turn: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(C, size, size) crop of ``grid`` (O, C, H, W) as ``dtype``, zero-padded off the grid; into ``out`` if given.

    ``grid`` is a `GridReader` or any array that slices (numpy, zarr). Orientation o holds
    embeddings of tiles transformed by D4 element o at untransformed positions; the crop is turned
    by the same element, so that its layout matches its contents, then by the element ``turn``.
    Cells are written once, straight to their turned place: the result is contiguous.
    """
    _, C, H, W = grid.shape
    out = np.empty((C, size, size), dtype) if out is None else out
    window = dihedral(dihedral(out, inverse(turn), dims=(1, 2)), inverse(orientation), dims=(1, 2))
    y0, x0 = int(centre[0]) - size // 2, int(centre[1]) - size // 2
    # The part of the window on the grid, in window coordinates; what lies around it is padding.
    ya, yb = min(max(-y0, 0), size), min(max(H - y0, 0), size)
    xa, xb = min(max(-x0, 0), size), min(max(W - x0, 0), size)
    for padding in (window[:, :ya], window[:, yb:], window[:, ya:yb, :xa], window[:, ya:yb, xb:]):
        padding[...] = 0
    inside = window[:, ya:yb, xa:xb]
    if inside.size == 0:
        return out
    if isinstance(grid, GridReader):
        grid.read_into(inside, orientation, y0 + ya, x0 + xa)
    else:
        inside[...] = grid[orientation, :, y0 + ya : y0 + yb, x0 + xa : x0 + xb]
    return out
