"""Crops of compressed grids: where to centre them, and reading them.

Training crops are centred by a pmf over tissue cells proportional to the squared distance to
the nearest background cell (NIC): crops land deep in tissue more often than on its edge.
Test crops sit at T evenly spaced positions in the raster order of tissue cells. A crop that
leaves the grid is padded with zeros, the value of background cells.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from nic_ray.dihedral import dihedral


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


def read_crop(grid, orientation: int, centre: tuple[int, int], size: int, dtype=np.float32) -> np.ndarray:
    """(C, size, size) crop of ``grid`` (O, C, H, W) as ``dtype``, zero-padded off the grid.

    ``grid`` is any array that slices (numpy, zarr: only the chunks the crop touches are read).
    Orientation o holds embeddings of tiles transformed by D4 element o at untransformed
    positions; the crop is turned by the same element, so that its layout matches its contents.
    The result may be a strided view: callers copy once, after any further transform.
    """
    _, C, H, W = grid.shape
    y0, x0 = int(centre[0]) - size // 2, int(centre[1]) - size // 2
    gy0, gx0, gy1, gx1 = max(y0, 0), max(x0, 0), min(y0 + size, H), min(x0 + size, W)
    if (gy0, gx0, gy1, gx1) == (y0, x0, y0 + size, x0 + size):
        out = np.asarray(grid[orientation, :, y0 : y0 + size, x0 : x0 + size], dtype)
    else:
        out = np.zeros((C, size, size), dtype)
        if gy0 < gy1 and gx0 < gx1:
            out[:, gy0 - y0 : gy1 - y0, gx0 - x0 : gx1 - x0] = grid[orientation, :, gy0:gy1, gx0:gx1]
    return dihedral(out, orientation, dims=(1, 2))
