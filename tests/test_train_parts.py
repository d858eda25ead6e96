"""Crops (pmf, test positions, padded reads, orientations) and the NIC CNN."""

import numpy as np
import torch

from nic_ray.compress import Store, compress
from nic_ray.slides.synthetic import write_slide
from nic_ray.train import NICNet, crop_pmf, evenly_spaced_centres, read_crop, sample_centres
from tests.conftest import cell_colours


def test_pmf_is_squared_distance_to_background():
    tissue = np.zeros((12, 15), np.uint8)
    tissue[2:10, 3:13] = 255
    tissue[5, 7] = 0  # a hole
    pmf = crop_pmf(tissue)
    # Brute force: squared distance from each tissue cell to the nearest background cell,
    # the grid's outside counting as background.
    padded = np.pad(tissue >= 26, 1)
    background = np.argwhere(~padded)
    expected = np.zeros(padded.shape)
    for y, x in np.argwhere(padded):
        expected[y, x] = ((background - (y, x)) ** 2).sum(1).min()
    expected = expected[1:-1, 1:-1]
    np.testing.assert_allclose(pmf, expected / expected.sum())
    assert pmf[tissue < 26].sum() == 0
    centres = sample_centres(pmf, 2000, np.random.default_rng(0))
    assert (tissue[centres[:, 0], centres[:, 1]] >= 26).all()


def test_evenly_spaced_centres_in_raster_order():
    tissue = np.zeros((6, 6), np.uint8)
    tissue[1:5, 2:4] = 200  # 8 tissue cells
    cells = np.argwhere(tissue >= 26)
    np.testing.assert_array_equal(evenly_spaced_centres(tissue, count=3), cells[[0, 4, 7]])


def test_read_crop_pads_off_the_grid():
    grid = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    crop = read_crop(grid, 0, (0, 1), 4)  # reaches 2 rows above and 1 column left
    expected = np.zeros((3, 4, 4), np.float32)
    expected[:, 2:, 1:] = grid[0, :, :2, :3]
    np.testing.assert_array_equal(crop, expected)
    assert not read_crop(grid, 1, (40, 40), 4).any()


def test_crops_of_an_eight_orientation_store_line_up(tmp_path, ray_session):
    # mean-rgb of a turned tile is the tile's mean: every orientation holds the same grid, and
    # the crop of orientation o must be that grid turned by D4 element o (numpy, independently).
    image = np.kron(cell_colours(6, 5), np.ones((128, 128, 1), np.uint8))
    path = write_slide(tmp_path / "c.tiff", image, 0.5, compression="zlib", downsamples=(1,))
    assert compress([str(path)], str(tmp_path / "s.zarr"), orientations=8, progress=False).ok
    store = Store.open(tmp_path / "s.zarr")
    grid = store.read_embeddings("c")
    base = read_crop(grid, 0, (3, 2), 4)
    for o in range(8):
        flip, turns = divmod(o, 4)
        expected = np.rot90(base[:, :, ::-1] if flip else base, turns, axes=(1, 2))
        np.testing.assert_array_equal(read_crop(grid, o, (3, 2), 4), expected)


def test_nic_cnn_shapes_size_and_learning_signal():
    net = NICNet(in_channels=3, heads={"label": 2, "risk": 1})
    assert net.config["strides"] == [2, 2, 2, 2, 2, 2, 1, 1]
    assert 150_000 < sum(p.numel() for p in NICNet(128, {"label": 2}).parameters()) < 170_000  # ~163k
    x = torch.randn(4, 3, 400, 400)
    assert net.features(x).shape == (4, 128, 1, 1)  # 400 → 1 exactly
    out = net(x)
    assert out["label"].shape == (4, 2) and out["risk"].shape == (4, 1)
    assert net.eval()(torch.randn(2, 3, 512, 512))["label"].shape == (2, 2)  # larger sizes averaged
    # A few steps on two separable classes lower the loss.
    torch.manual_seed(0)
    net = NICNet(in_channels=3, heads={"label": 2}, width=16, strides=(2, 2, 1))  # 64-cell crops
    data = torch.randn(8, 3, 64, 64)
    labels = torch.tensor([0, 1] * 4)
    data[labels == 1, 0] += 2.0
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(data)["label"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5
