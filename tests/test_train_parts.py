"""Crops (pmf, test positions, padded reads, orientations) and the NIC CNN."""

import numpy as np
import pytest
import torch

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import write_slide
from nic_ray.store import Store
from nic_ray.train import NICNet, crop_pmf, evenly_spaced_centres, keep_on_grid, read_crop, sample_centres
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


@pytest.mark.parametrize("length,size", [(10, 4), (10, 10), (5, 8), (6, 9)])
def test_crops_kept_on_the_grid_hold_all_they_can(length, size):
    """Brute force along one axis: each moved crop holds as many grid cells as any crop can, and
    it is the nearest such placement to where it was drawn."""
    centres = np.arange(-3, length + 3)
    moved = keep_on_grid(np.stack([centres, np.zeros_like(centres)], axis=1), (length, length), size)[:, 0]

    def held(c):
        start = c - size // 2
        return min(start + size, length) - max(start, 0)

    best = max(held(c) for c in range(-size, length + size))
    for c, m in zip(centres, moved):
        assert held(m) == best
        assert abs(m - c) == min(abs(d - c) for d in range(-size, length + size) if held(d) == best)


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


def hand_store(url: str, orientations: int, tissue: np.ndarray) -> np.ndarray:
    """A store of one slide "s" written by hand, random codes (C = 3) in every orientation; the codes."""
    from nic_ray.store import CHUNK, StoreConfig, write_block

    encoder = {"name": "hand", "sha256": "0" * 64, "code_size": 3, "patch_size": 128, "mpp": 0.5}
    store = Store.create_or_open(url, StoreConfig(encoder, 128, orientations))
    H, W = tissue.shape
    store.create_slide("s", {}, tissue, np.zeros((4, 4, 3), np.uint8))
    values = np.random.default_rng(0).normal(size=(orientations, 3, H, W)).astype(np.float16)
    for y0 in range(0, H, CHUNK):
        for x0 in range(0, W, CHUNK):
            write_block(url, "s", values.shape, y0, x0, values[:, :, y0 : y0 + CHUNK, x0 : x0 + CHUNK])
    store.mark_complete("s")
    return values.astype(np.float32)


def turned(window: np.ndarray, o: int) -> np.ndarray:
    """D4 element o on the (y, x) axes of (C, h, w), in numpy: flip left-right if o ≥ 4, then turns."""
    flip, turns = divmod(o, 4)
    return np.rot90(window[:, :, ::-1] if flip else window, turns, axes=(1, 2))


def test_crops_turn_each_stored_orientation_by_its_own_element(tmp_path):
    """A store whose 8 orientations hold different values (two chunks down, two across): the crop
    of orientation o comes from orientation o, turned by D4 element o, zero off the grid."""
    values = hand_store(str(tmp_path / "hand.zarr"), 8, np.full((40, 36), 255, np.uint8))
    reader, _ = Store.open(tmp_path / "hand.zarr").grid("s")
    padded = np.pad(values, ((0, 0), (0, 0), (12, 12), (12, 12)))
    for centre in ((20, 18), (2, 34), (38, 1)):  # across chunks, and reaching off the grid
        y0, x0 = centre[0] - 6 + 12, centre[1] - 6 + 12
        for o in range(8):
            expected = turned(padded[o, :, y0 : y0 + 12, x0 : x0 + 12], o)
            np.testing.assert_array_equal(read_crop(reader, o, centre, 12), expected)


def test_predictions_average_the_net_over_crops_at_tissue_and_their_views(tmp_path):
    """predict_outputs against the net run by hand: crops centred at evenly spaced tissue cells in
    raster order, moved onto the grid (a crop of 16 on a 40 × 36 grid: centres in 8..32 × 8..28),
    each in 8 dihedral views (numpy); outputs averaged."""
    from nic_ray.train.prediction import predict_outputs

    tissue = np.zeros((40, 36), np.uint8)
    tissue[5:30, 8:33] = 200
    tissue[12, 20] = 10  # below the threshold: not a centre
    values = hand_store(str(tmp_path / "p.zarr"), 1, tissue)
    torch.manual_seed(0)
    net = NICNet(3, {"y": 2, "z": 1}, width=8, strides=(2, 1)).eval()
    cells = np.argwhere(tissue >= 26)
    centres = cells[[0, len(cells) // 2, len(cells) - 1]]  # 3 evenly spaced in raster order
    centres = np.clip(centres, 8, [32, 28])
    assert centres.tolist() == [[8, 8], [17, 21], [29, 28]]  # the first and last moved
    views = [turned(values[0][:, y - 8 : y + 8, x - 8 : x + 8], o) for y, x in centres for o in range(8)]
    with torch.no_grad():
        out = net(torch.from_numpy(np.stack(views).copy()))
    got = predict_outputs(net, Store.open(tmp_path / "p.zarr"), ["s"], 16, crops=3, views=8)
    for head in ("y", "z"):
        np.testing.assert_allclose(got[head][0], out[head].mean(0).numpy(), rtol=1e-5, atol=1e-6)


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


def test_training_batches_balance_the_first_classification_task_unless_told_otherwise():
    """90 slides of class 0 and 10 of class 1: the trainer's draws give each class half the
    crops; told to balance nothing but a regression task, the draws follow the slides (10%)."""
    from dataclasses import asdict

    from nic_ray.train.labels import Task
    from nic_ray.train.options import TrainOptions
    from nic_ray.train.trainer import balanced_task, training_draws

    tasks = [Task("score", "regression", ("score",)), Task("label", "binary", ("label",), (0, 1))]
    labels = np.array([0.0] * 90 + [1.0] * 10)
    for options, share in ((TrainOptions(), 0.5), (TrainOptions(balance="score"), None)):
        config = {
            "train_ids": [f"s{i}" for i in range(100)],
            "options": asdict(options),
            "train_targets": {"label": labels, "score": np.linspace(0, 1, 100)},
            "balance": balanced_task(options, tasks),
        }
        drawn = []
        for rank in range(2):
            draws = training_draws(config, 8, rank)
            for epoch in range(20):
                draws.set_epoch(epoch)
                drawn += [labels[slide] for slide, _ in draws]
        assert len(drawn) == 2 * 20 * 20 * 8  # 100 slides / 16 a batch: 7 steps, raised to 20, of 8 crops
        expected = share if share is not None else 0.1
        assert abs(np.mean(drawn) - expected) < 0.05, (options.balance, np.mean(drawn))
    large = {**config, "train_ids": [f"s{i}" for i in range(1000)], "train_targets": {}, "balance": ""}
    assert training_draws(large, 8, 0).count == 63 * 8  # 1000 slides / 16 a batch: 63 steps, no floor


def test_default_strides_follow_the_crop_size():
    """The deepest NIC stack (up to the paper's 8 layers) whose valid convolutions a crop feeds:
    the network runs on such crops, and one more halving layer would not (PyTorch refuses)."""
    from nic_ray.train.nic_cnn import default_strides
    from nic_ray.train.options import NIC_STRIDES

    assert default_strides(400) == NIC_STRIDES and default_strides(24) == (2, 2, 1, 1)
    for crop in (24, 50, 100, 383, 400, 800):
        strides = default_strides(crop)
        net = NICNet(3, {"y": 1}, width=4, strides=strides).eval()
        assert net.features(torch.zeros(1, 3, crop, crop)).shape[-1] >= 1
        if strides.count(2) < 6:
            deeper = NICNet(3, {"y": 1}, width=4, strides=(2, *strides)).eval()
            with pytest.raises(RuntimeError):
                deeper.features(torch.zeros(1, 3, crop, crop))
