"""From a heatmap to a region, and how well a region matches a mask (the Jaccard index).

The paper post-processes its Grad-CAM maps with "a simple general-purpose routine" that it does
not give. Ours, with its parameters in `RegionOptions`: smooth the heatmap with a Gaussian of
``sigma`` cells, keep the tissue cells at or above ``threshold`` × the smoothed map's peak over
tissue, and drop connected groups (8-neighbours) of fewer than ``min_cells`` cells.

Example::

    region = heatmap_region(heatmap, tissue >= 26)
    jaccard(region, mask_on_grid(mask, heatmap.shape, cell_px=256))
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nic_ray.explain.options import RegionOptions


def heatmap_region(heatmap: np.ndarray, tissue: np.ndarray, options: RegionOptions | None = None) -> np.ndarray:
    """bool (H, W): the region of ``heatmap`` on the ``tissue`` cells (bool (H, W)).

    >>> heat = np.zeros((8, 8)); heat[2:5, 2:5] = 1.0
    >>> heatmap_region(heat, np.ones((8, 8), bool), RegionOptions(sigma=0)).sum()
    np.int64(9)
    """
    options = options or RegionOptions()
    smooth = ndimage.gaussian_filter(heatmap.astype(np.float64), options.sigma) if options.sigma else heatmap
    peak = smooth[tissue].max() if tissue.any() else 0.0
    if peak <= 0:
        return np.zeros(heatmap.shape, bool)
    region = tissue & (smooth >= options.threshold * peak)
    labels, count = ndimage.label(region, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    return region & (sizes[labels] >= options.min_cells)


def mask_on_grid(mask: np.ndarray, grid_shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """bool (H, W): a mask at grid resolution as it is; one at slide resolution (level-0 pixels,
    ``cell_px`` of them a cell side) set where at least half of a cell's pixels are.

    >>> mask = np.zeros((8, 8), bool); mask[:4, :6] = True
    >>> mask_on_grid(mask, (2, 2), 4).tolist()
    [[True, True], [False, False]]
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim == 3:
        mask = mask.any(axis=-1)
    H, W = grid_shape
    if mask.shape == (H, W):
        return mask
    cell = round(cell_px)
    padded = np.zeros((H * cell, W * cell), bool)
    h, w = min(mask.shape[0], H * cell), min(mask.shape[1], W * cell)
    padded[:h, :w] = mask[:h, :w]
    return padded.reshape(H, cell, W, cell).mean(axis=(1, 3)) >= 0.5


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two bool masks; NaN when both are empty.

    >>> jaccard(np.array([1, 1, 0], bool), np.array([0, 1, 1], bool))
    0.3333333333333333
    """
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")
