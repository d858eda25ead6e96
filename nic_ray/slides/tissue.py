"""Where the tissue is: a low-resolution mask, reported per grid cell as a tissue fraction.

The mask is HSV saturation thresholded by Otsu's method (stained tissue is coloured, glass and
background are grey or white), with a floor so that a blank slide does not become all tissue.
"""

from __future__ import annotations

import math

import numpy as np

from nic_ray.slides.grid import TileGrid
from nic_ray.slides.resample import box_downsample
from nic_ray.slides.slide import Slide

_STRIP = 1024  # target rows read at a time: bounded memory on any slide


def read_thumbnail(slide: Slide, mpp: float) -> tuple[np.ndarray, float]:
    """The whole slide as RGB at about ``mpp`` µm/px (never coarser), and its exact µm/px.

    Reads the coarsest level not coarser than ``mpp`` and box-shrinks it by an integer factor,
    strip by strip.
    """
    usable = [i for i, lv in enumerate(slide.levels) if lv.mpp <= mpp] or [0]
    level = max(usable, key=lambda i: slide.levels[i].mpp)
    lv = slide.levels[level]
    k = max(1, math.floor(mpp / lv.mpp))
    width, height = math.ceil(lv.width / k), math.ceil(lv.height / k)
    strips = [
        box_downsample(slide.read_region(level, 0, y * k, width * k, min(_STRIP, height - y) * k), k)
        for y in range(0, height, _STRIP)
    ]
    return np.concatenate(strips), lv.mpp * k


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of (…, 3) uint8 RGB, as uint8 0..255."""
    # Channel by channel: numpy reduces a length-3 last axis far slower (benchmarks/read_tiles.py).
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi = np.maximum(np.maximum(r, g), b).astype(np.uint16)
    lo = np.minimum(np.minimum(r, g), b)
    return ((hi - lo) * 255 // np.maximum(hi, 1)).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values``: the split maximising between-class variance."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return int(np.argmax(between))


def tissue_mask(rgb: np.ndarray, min_saturation: int = 20) -> np.ndarray:
    """Boolean mask of tissue pixels: saturation above max(Otsu, ``min_saturation``)."""
    sat = saturation(rgb)
    return sat > max(otsu_threshold(sat), min_saturation)


def tissue_fraction(
    slide: Slide, grid: TileGrid, min_saturation: int = 20, mask_mpp: float | None = None
) -> np.ndarray:
    """(H, W) uint8: the fraction of each grid cell that is tissue, 0..255.

    The mask is computed at ``mask_mpp`` (default `default_mask_mpp`). Parts of a cell beyond
    the image edge count as background, as they are padded white.
    """
    thumb, thumb_mpp = read_thumbnail(slide, mask_mpp or default_mask_mpp(grid))
    return cell_fraction(tissue_mask(thumb, min_saturation), thumb_mpp, grid)


def default_mask_mpp(grid: TileGrid) -> float:
    """8 mask pixels per cell side."""
    return grid.stride * grid.mpp / 8


def cell_fraction(mask: np.ndarray, mask_mpp: float, grid: TileGrid) -> np.ndarray:
    """(H, W) uint8: the fraction of each grid cell covered by ``mask`` (at ``mask_mpp``)."""
    r = grid.mpp / mask_mpp  # mask pixels per target pixel
    H, W = grid.shape
    P, S = grid.patch_size, grid.stride

    def bounds(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = np.floor(np.arange(n) * S * r).astype(np.int64)
        stop = np.maximum(start + 1, np.ceil((np.arange(n) * S + P) * r).astype(np.int64))
        return np.minimum(start, size), np.minimum(stop, size), stop - start

    y0, y1, hy = bounds(H, mask.shape[0])
    x0, x1, hx = bounds(W, mask.shape[1])
    sums = _integral_at(mask, np.concatenate([y0, y1]), np.concatenate([x0, x1]))
    count = sums[H:, W:] - sums[:H, W:] - sums[H:, :W] + sums[:H, :W]
    fraction = count / np.outer(hy, hx)
    return np.rint(fraction * 255).astype(np.uint8)


def _integral_at(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(ys), len(xs)): the sum of ``mask[:y, :x]`` at each y of ``ys`` and x of ``xs``.

    Summed along rows over the whole mask (numpy's fast direction), down the columns only at
    ``xs``: much cheaper than a full integral image (docs/benchmarks.md, planning).
    """
    h, w = mask.shape
    across = np.zeros((h, w + 1), np.int32)
    np.cumsum(mask, axis=1, out=across[:, 1:])
    down = np.zeros((len(xs), h + 1), np.int64)
    np.cumsum(across[:, xs].T, axis=1, out=down[:, 1:])
    return down[:, ys].T
