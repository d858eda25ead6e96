"""The fast tile path gives exactly OpenSlide's pixels: synthetic slides and the real CMU slide."""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.slides import open_slide, read_cells, tile_grid
from tests.conftest import openslide_rgb

# Sizes divisible by every downsample: OpenSlide then maps levels exactly (see README).
W, H = 2400, 1920


@pytest.mark.parametrize(
    "fmt,compression,tile",
    [("svs", "jpeg", 240), ("tiff", "jpeg", 256), ("tiff", "zlib", 512), ("tiff", "none", 256)],
)
def test_every_level_matches_openslide(tmp_path, fmt, compression, tile):
    path = write_slide(
        tmp_path / f"s.{fmt}",
        TissuePainter(W, H, seed=2),
        0.25,
        format=fmt,
        compression=compression,
        tile=tile,
        downsamples=(1, 2, 8),
    )
    with open_slide(path) as slide:
        assert slide.fast_levels == (0, 1, 2)  # the fast path really is what is compared
        for level, lv in enumerate(slide.levels):
            regions = [
                (0, 0, lv.width, lv.height),  # whole level, every edge tile
                (-17, -9, 300, 200),  # off the top-left corner
                (lv.width - 123, lv.height - 77, 300, 260),  # off the bottom-right corner
                (tile - 5, tile - 3, 11, 7),  # across four tiles
                (-400, lv.height + 5, 100, 100),  # wholly outside
            ]
            for x, y, w, h in regions:
                got = slide.read_region(level, x, y, w, h)
                assert np.array_equal(got, openslide_rgb(path, level, x, y, w, h)), (level, x, y)


def test_cmu_slide_matches_openslide(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.vendor == "aperio" and slide.fast_levels == (0,)
        w, h = slide.dimensions
        assert np.array_equal(slide.read_region(0, 0, 0, w, h), openslide_rgb(cmu_slide, 0, 0, 0, w, h))


def test_sparse_tiles_read_white(tmp_path):
    # Tiles a TIFF leaves out (byte count 0): OpenSlide shows them transparent, which reads white.
    colours = {0: 40, 2: 120, 3: 200}
    tiles = (np.full((256, 256, 3), colours[i], np.uint8) if i in colours else None for i in range(4))
    path = tmp_path / "sparse.tiff"
    tifffile.imwrite(
        path, tiles, shape=(512, 512, 3), dtype=np.uint8, tile=(256, 256), photometric="rgb", compression="zlib"
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].databytecounts[1] == 0
    with open_slide(path, mpp=0.5) as slide:
        assert slide.fast_levels == (0,)
        grid = tile_grid(slide, mpp=0.5, patch_size=192)  # cells across the empty tile's edges, and within it
        cells = np.argwhere(np.ones(grid.shape, bool))
        patches = read_cells(slide, grid, cells)
    for (y, x), patch in zip(cells, patches):
        assert np.array_equal(patch, openslide_rgb(path, 0, x * 192, y * 192, 192, 192)), (y, x)
    assert (patches[1][:, 64:] == 255).all() and (patches[0] != 255).any()


@pytest.mark.parametrize("backend,fast_levels", [("auto", (0,)), ("openslide", ())])
def test_cmu_patches_match_openslide_per_patch(cmu_slide, backend, fast_levels):
    # A row of cells is read at once, then cut into patches: per patch, OpenSlide's pixels.
    with open_slide(cmu_slide, backend=backend) as slide:
        assert slide.fast_levels == fast_levels
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        assert grid.scale == 1.0 and grid.mpp == pytest.approx(0.499)  # within 10%: read as is
        rng = np.random.default_rng(0)
        cells = np.argwhere(np.ones(grid.shape, bool))
        cells = cells[rng.permutation(len(cells))]  # any order in, the same order out
        patches = read_cells(slide, grid, cells)
    for (y, x), patch in zip(cells, patches):
        assert np.array_equal(patch, openslide_rgb(cmu_slide, 0, x * 128, y * 128, 128, 128)), (y, x)


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_decode_each_cmu_tile_once(cmu_slide, threads):
    with open_slide(cmu_slide) as slide, ThreadPoolExecutor(threads) as pool:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        page = slide._pages[0]
        decoded, decode = Counter(), page.tile

        def counted(row, col, out):
            decoded.update([(row, col)])
            if row in (4, 8):  # slow in some rows: the threads' bands of tile rows end in any order
                time.sleep(0.01)
            return decode(row, col, out)

        page.tile = counted
        cells = np.argwhere(np.ones(grid.shape, bool))
        patches = read_cells(slide, grid, cells, pool, threads)
        once = Counter(decoded)
        # With gaps, as tissue leaves them: the same pixels, whichever thread reads a cell.
        some = np.argwhere(np.random.default_rng(threads).random(grid.shape) < 0.6)
        some_patches = read_cells(slide, grid, some, pool, threads)
    # 240-px stored tiles under 128-px cells: every tile of the 2220 × 2967 image, once each,
    # though a cell row often spans two tile rows, and so, with threads, two threads' bands.
    assert (grid.shape, page.tile_width, page.tile_height) == ((24, 18), 240, 240)
    assert len(once) == 10 * 13 and set(once.values()) == {1}
    for (y, x), patch in zip(cells, patches):
        assert np.array_equal(patch, openslide_rgb(cmu_slide, 0, x * 128, y * 128, 128, 128)), (y, x)
    for (y, x), patch in zip(some, some_patches):
        assert np.array_equal(patch, patches[y * 18 + x]), (y, x)
