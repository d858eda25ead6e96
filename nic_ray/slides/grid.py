"""The grid of P×P patches (stride S) that covers a slide at the target resolution.

Cell (y, x) covers target pixels [y·S, y·S+P) × [x·S, x·S+P); the grid is H = ceil(height/S)
by W = ceil(width/S), and patches that run off the image are padded white (docs/design.md).
"""

from __future__ import annotations

import math
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


def level0_geometry(slide: Slide, grid: TileGrid) -> dict:
    """Where the grid lies on the slide's level 0: ``downsample`` (level-0 pixels a grid pixel),
    level 0's ``mpp`` and ``size`` (height, width): what overlays need (a store records it)."""
    level0 = slide.levels[0]
    return {
        "downsample": slide.levels[grid.level].downsample * grid.scale,
        "mpp": level0.mpp,
        "size": [level0.height, level0.width],
    }


def _integer(f: float) -> int | None:
    k = round(f)
    return k if abs(f - k) < 1e-9 else None


def level_box(grid: TileGrid, x: int, y: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) in the pixels of the grid's level of a box in target pixels."""
    f = _integer(grid.scale) or grid.scale
    return round(x * f), round(y * f), round(width * f), round(height * f)


def to_target(grid: TileGrid, pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Level pixels of a `level_box` shrunk to the target resolution: (height, width, 3)."""
    k = _integer(grid.scale)
    return resize_area(pixels, height, width) if k is None else box_downsample(pixels, k)


def read_target_region(slide: Slide, grid: TileGrid, x: int, y: int, width: int, height: int) -> np.ndarray:
    """RGB (height, width, 3) at the grid's resolution, target-pixel coordinates."""
    return to_target(grid, slide.read_region(grid.level, *level_box(grid, x, y, width, height)), width, height)
