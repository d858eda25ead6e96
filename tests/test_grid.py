"""Grid shape, cell placement, white padding, strides, and level choice by µm/px."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nic_ray.datasets.synthetic import write_slide
from nic_ray.errors import SlideError
from nic_ray.slides import LevelChoice, choose_level, open_slide, read_cells, tile_grid
from nic_ray.slides.resample import box_downsample
from tests.conftest import cell_colours, openslide_rgb


def colour_slide(tmp_path, rows, cols, cell_px, mpp, height=None, width=None, downsamples=(1,), tile=256):
    """A lossless slide whose grid cells of ``cell_px`` pixels each have a distinct colour."""
    colours = cell_colours(rows, cols)
    image = np.kron(colours, np.ones((cell_px, cell_px, 1), np.uint8))
    image = image[: height or image.shape[0], : width or image.shape[1]]
    path = write_slide(tmp_path / "colours.tiff", image, mpp, compression="zlib", downsamples=downsamples, tile=tile)
    return path, colours, image


def test_grid_shape_and_cell_placement(tmp_path):
    # 10 × 7 cells of 128 px; the last row and column are cut short (edge cells).
    path, colours, image = colour_slide(tmp_path, 10, 7, 128, 0.5, height=10 * 128 - 50, width=7 * 128 - 90)
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        assert grid.shape == (math.ceil(1230 / 128), math.ceil(806 / 128)) == (10, 7)
        cells = np.argwhere(np.ones(grid.shape, bool))
        patches = read_cells(slide, grid, cells)
    for (y, x), patch in zip(cells, patches):
        inside = patch[: 1230 - y * 128, : 806 - x * 128]
        assert (inside == colours[y, x]).all(), (y, x)
        # Beyond the image edge: white.
        assert (patch[1230 - y * 128 :] == 255).all() and (patch[:, 806 - x * 128 :] == 255).all()


def test_downsampled_grid_from_finer_level(tmp_path):
    # 0.25 µm/px with no 0.5 level (levels 1, 4): read level 0 and shrink 2×.
    path, colours, image = colour_slide(tmp_path, 6, 5, 256, 0.25, downsamples=(1, 4))
    with open_slide(path) as slide:
        assert [lv.mpp for lv in slide.levels] == [0.25, 1.0]
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        assert (grid.level, grid.scale, grid.shape) == (0, 2.0, (6, 5))
        patches = read_cells(slide, grid, [(2, 3), (5, 4)])
    # Independent: OpenSlide's level 0, box-averaged 2×2 with numpy.
    ref = openslide_rgb(path, 0, 3 * 256, 2 * 256, 256, 256).reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.array_equal(patches[0], np.floor(ref + 0.5).astype(np.uint8))
    assert (patches[1] == colours[5, 4]).all()


@pytest.mark.parametrize("tile", [256, 240])
def test_downsampled_grid_read_by_threads(tmp_path, tile):
    # With 240-px tiles, a row of cells (256 level px) spans two tile rows, and some such rows
    # span the bands of tile rows that the threads take: each thread fills part of them.
    path, colours, image = colour_slide(tmp_path, 6, 5, 256, 0.25, downsamples=(1, 4), tile=tile)
    with open_slide(path) as slide, ThreadPoolExecutor(3) as pool:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        cells = np.argwhere(np.ones(grid.shape, bool))[::-1]  # any order in, the same order out
        patches = read_cells(slide, grid, cells, pool, 3)
    ref = openslide_rgb(path, 0, 0, 0, 5 * 256, 6 * 256).reshape(6 * 128, 2, 5 * 128, 2, 3).mean(axis=(1, 3))
    ref = np.floor(ref + 0.5).astype(np.uint8)
    for (y, x), patch in zip(cells, patches):
        assert np.array_equal(patch, ref[y * 128 : y * 128 + 128, x * 128 : x * 128 + 128]), (y, x)


def test_level_choice_uses_matching_level(tmp_path):
    # 0.25 µm/px with a 0.5 level: read level 1 as it is.
    path, colours, image = colour_slide(tmp_path, 4, 4, 256, 0.25, downsamples=(1, 2, 4))
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5)
        assert (grid.level, grid.scale, grid.mpp, grid.shape) == (1, 1.0, 0.5, (4, 4))
        patch = read_cells(slide, grid, [(1, 2)])[0]
    assert np.array_equal(patch, openslide_rgb(path, 1, 256, 128, 128, 128))


def test_stride_smaller_than_patch(tmp_path):
    path, colours, image = colour_slide(tmp_path, 4, 4, 128, 0.5)
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=128, stride=64)
        assert grid.shape == (8, 8)
        cells = [(0, 0), (3, 5), (3, 6), (7, 7)]
        patches = read_cells(slide, grid, cells)
    padded = np.full((8 * 64 + 128, 8 * 64 + 128, 3), 255, np.uint8)
    padded[:512, :512] = image
    for (y, x), patch in zip(cells, patches):
        assert np.array_equal(patch, padded[y * 64 : y * 64 + 128, x * 64 : x * 64 + 128])


def test_choose_level_rules():
    assert choose_level([0.25, 0.5, 2.0], 0.5) == LevelChoice(1, 1.0, 0.5)
    assert choose_level([0.499, 1.996], 0.5).scale == 1.0  # within 10%
    assert choose_level([0.23, 0.92], 0.5).level == 0  # "20x" at 0.23: shrink from it
    assert choose_level([0.23, 0.92], 0.5).scale == pytest.approx(0.5 / 0.23)
    assert choose_level([0.25, 0.44, 1.76], 0.5) == LevelChoice(1, 0.5 / 0.44, 0.5)  # 12% off: shrink
    with pytest.raises(ValueError, match="coarser than the target"):
        choose_level([1.0, 4.0], 0.5)


def test_target_finer_than_slide_is_refused(tmp_path):
    path, *_ = colour_slide(tmp_path, 2, 2, 128, 1.0)
    with open_slide(path) as slide, pytest.raises(SlideError, match="coarser than the target"):
        tile_grid(slide, mpp=0.5)


def test_non_integer_scale_uses_area_resize(tmp_path):
    # 0.3 µm/px to 0.5: factor 5/3.
    path, colours, image = colour_slide(tmp_path, 3, 3, 400, 0.3)
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=120)
        assert grid.scale == pytest.approx(5 / 3) and grid.shape == (6, 6)
        patch = read_cells(slide, grid, [(4, 1)])[0]
    # Cell (4, 1) at 0.5 µm/px spans source px [800, 1000) × [200, 400): all in colour (2, 0).
    assert (patch == colours[2, 0]).all()


@pytest.mark.parametrize("k", [2, 3, 4, 7, 16, 17])
def test_box_downsample_against_block_means(k):
    # Odd sizes: the rows and columns past the last whole block are dropped.
    image = np.random.default_rng(k).integers(0, 256, (5 * k + k // 2, 9 * k + 1, 3), dtype=np.uint8)
    image[:k, :k] = 255  # the largest sums: 16² · 255 is the most that 16 bits hold
    blocks = image[: 5 * k, : 9 * k].reshape(5, k, 9, k, 3).astype(np.float64)
    means = np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    assert np.array_equal(box_downsample(image, k), means)
