"""Tissue fraction per grid cell on a slide whose tissue is known exactly."""

import math

import numpy as np

from nic_ray.datasets.synthetic import write_slide
from nic_ray.slides import open_slide, tile_grid, tissue_fraction
from nic_ray.slides.grid import TileGrid
from nic_ray.slides.tissue import cell_fraction, otsu_threshold, saturation

PINK = (220, 120, 180)


def test_tissue_fraction_matches_drawn_tissue(tmp_path):
    # 0.25 µm/px, grid cells at 0.5 µm/px are 256 source px. Full, half, quarter and empty cells.
    rng = np.random.default_rng(0)
    image = np.full((6 * 256, 5 * 256, 3), 245, np.uint8)
    image += rng.integers(0, 6, image.shape, dtype=np.uint8)  # grey glass noise
    expected = np.zeros((6, 5))
    image[0:512, 0:512] = PINK  # four full cells
    expected[0:2, 0:2] = 1
    image[512:768, 768:896] = PINK  # left half of cell (2, 3)
    expected[2, 3] = 0.5
    image[1280:1408, 1024:1152] = PINK  # a quarter of cell (5, 4)
    expected[5, 4] = 0.25
    path = write_slide(tmp_path / "t.tiff", image, 0.25, compression="zlib", downsamples=(1, 4, 16))
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5)
        fraction = tissue_fraction(slide, grid) / 255
    assert fraction.shape == (6, 5)
    np.testing.assert_allclose(fraction, expected, atol=0.05)


def test_edge_cells_count_padding_as_background(tmp_path):
    image = np.full((300, 300, 3), PINK, np.uint8)  # all tissue, but cells of 256 overhang
    path = write_slide(tmp_path / "e.tiff", image, 0.5, compression="zlib", downsamples=(1,))
    with open_slide(path) as slide:
        fraction = tissue_fraction(slide, tile_grid(slide, mpp=0.5, patch_size=256)) / 255
    np.testing.assert_allclose(fraction, [[1, 44 / 256], [44 / 256, (44 / 256) ** 2]], atol=0.05)


def test_blank_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(1)
    image = (240 + rng.integers(0, 8, (512, 512, 3))).astype(np.uint8)
    path = write_slide(tmp_path / "b.tiff", image, 0.5, compression="zlib", downsamples=(1,))
    with open_slide(path) as slide:
        assert tissue_fraction(slide, tile_grid(slide)).max() == 0


def test_otsu_and_saturation_against_brute_force():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(30, 8, 5000), rng.normal(150, 20, 3000)]).clip(0, 255).astype(np.uint8)

    def between(t):
        a, b = values[values <= t].astype(float), values[values > t].astype(float)
        return 0 if len(a) == 0 or len(b) == 0 else len(a) * len(b) * (a.mean() - b.mean()) ** 2

    assert between(otsu_threshold(values)) == max(between(t) for t in range(256))
    rgb = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    hi, lo = rgb.max(1).astype(float), rgb.min(1).astype(float)
    expected = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1) * 255, 0)
    assert np.abs(saturation(rgb).astype(float) - expected).max() < 1


def test_cell_fraction_against_each_cell_counted():
    # Overlapping and spaced patches, cells overhanging the mask, mask pixels not a cell's divisor.
    rng = np.random.default_rng(3)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(1, 120, 2))) < rng.random()
        P = int(rng.integers(8, 300))
        S = int(rng.integers(P // 3 + 1, P * 2))
        mask_mpp = float(rng.uniform(1, 20))
        r = 0.5 / mask_mpp  # mask pixels per target pixel
        height, width = (max(1, int(n / r * rng.uniform(0.9, 1))) for n in mask.shape)
        grid = TileGrid(0, 1.0, 0.5, width, height, P, S)
        expected = np.zeros(grid.shape)
        for i, j in np.ndindex(grid.shape):
            y0, x0 = math.floor(i * S * r), math.floor(j * S * r)
            y1, x1 = max(y0 + 1, math.ceil((i * S + P) * r)), max(x0 + 1, math.ceil((j * S + P) * r))
            expected[i, j] = mask[y0:y1, x0:x1].sum() / ((y1 - y0) * (x1 - x0))
        np.testing.assert_array_equal(cell_fraction(mask, mask_mpp, grid), np.rint(expected * 255))
