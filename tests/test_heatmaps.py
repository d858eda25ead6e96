"""Grad-CAM against autograd by hand, its equivariance, and heatmaps end to end on S3: a run and
a store written by hand on a real S3 endpoint, OME-Zarr read back with plain zarr, GeoJSON with
shapely, a failing slide that writes nothing but its reason, and bad input refused in one line."""

import itertools
import json
from dataclasses import asdict

import fsspec
import numpy as np
import pytest
import shapely
import torch
import zarr

from nic_ray.cli import main
from nic_ray.explain import Target, grad_cam, grid_heatmap, heatmaps
from nic_ray.explain.cam import tile_starts, to_cells
from nic_ray.runtime.run_files import RunError, RunFiles
from nic_ray.store import CHUNK, Store, StoreConfig, write_block
from nic_ray.train import NICNet
from tests.test_train_parts import turned

HEADS = {"b": 1, "m": 3, "r": 1, "s": 1}


def small_net(seed: int = 0, in_channels: int = 3) -> NICNet:
    torch.manual_seed(seed)
    net = NICNet(in_channels, HEADS, width=8, strides=(2, 2, 1), dropout=0.0)
    with torch.no_grad():  # BatchNorm statistics other than the identity's
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("task, index", [("b", 0), ("m", 0), ("m", 2), ("r", 0), ("s", 0)])
def test_grad_cam_equals_autograd_on_the_first_block_by_hand(task, index):
    net = small_net()
    x = torch.randn(3, 3, 21, 21)
    # By hand: the first block's activations A as a leaf, the rest of the network on them.
    a = net.features[:3](x).detach().requires_grad_(True)
    y = net.heads[task](net.dense(net.features[3:](a).mean(dim=(2, 3))))[:, index]
    (g,) = torch.autograd.grad(y.sum(), a)
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    got = grad_cam(net, x, Target(task, index))
    assert got.shape == (3, 10, 10) and expected.abs().sum() > 0
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)


def test_maps_spread_back_onto_the_cells_each_position_saw():
    cam = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # a 3×3 stride-2 conv's positions over 5×5 cells
    cells = to_cells(cam, 5, 2)[0]
    assert cells[0, 0] == 1 and cells[0, 4] == 2 and cells[4, 0] == 3 and cells[4, 4] == 4
    assert cells[0, 2] == 1.5 and cells[2, 0] == 2 and cells[2, 2] == 2.5  # shared cells: the mean
    assert to_cells(cam, 6, 2)[0, 5].tolist() == [0.0] * 6  # a row no position saw


def test_tiles_lie_symmetrically_and_cover_the_grid():
    for length, size in ((40, 24), (100, 24), (400, 400), (20, 24), (1000, 400)):
        starts = tile_starts(length, size)
        assert [length - size - s for s in reversed(starts)] == starts
        if length > size:
            assert starts[0] == 0 and starts[-1] == length - size
            assert all(b - a <= size // 2 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("shape, crop", [((20, 20), 24), ((40, 36), 24)])
def test_heatmap_of_a_turned_grid_is_the_turned_heatmap(shape, crop):
    """Padded where the grid is smaller than a crop, tiled where it is larger."""
    net = small_net(1)
    grid = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    heatmap = grid_heatmap([net], grid[None], Target("m", 1), crop)
    assert heatmap.shape == shape and heatmap.max() > 0
    for o in range(1, 8):
        moved = grid_heatmap([net], turned(grid, o)[None], Target("m", 1), crop)
        np.testing.assert_allclose(moved, turned(heatmap[None], o)[0], rtol=1e-4, atol=1e-6)


def hand_store(url: str, slides: dict[str, np.ndarray]) -> Store:
    """A store of slides (C = 3, stride 128, 0.5 µm/px, level 0) written by hand."""
    encoder = {"name": "hand", "sha256": "1" * 64, "code_size": 3, "patch_size": 128, "mpp": 0.5}
    store = Store.create_or_open(url, StoreConfig(encoder, 128, 1))
    for slide_id, values in slides.items():
        _, H, W = values.shape
        info = {
            "source": f"{slide_id}.tiff",
            "mpp": 0.5,
            "patch_size": 128,
            "stride": 128,
            "tissue_threshold": 26,
            "level0": {"downsample": 1.0, "mpp": 0.5, "size": [H * 128 - 50, W * 128 - 70]},
        }
        tissue = np.full((H, W), 255, np.uint8)
        tissue[:, :2] = 0  # background on the left
        store.create_slide(slide_id, info, tissue, np.full((H * 4, W * 4, 3), 230, np.uint8))
        for y0 in range(0, H, CHUNK):
            for x0 in range(0, W, CHUNK):
                block = values[None, :, y0 : y0 + CHUNK, x0 : x0 + CHUNK].astype(np.float16)
                write_block(url, slide_id, (1, 3, H, W), y0, x0, block)
        store.mark_complete(slide_id)
    return store


def hand_run(url: str, store: Store, net: NICNet) -> None:
    files = RunFiles(url)
    tasks = [
        {"name": "b", "type": "binary", "columns": ["b"], "classes": [0, 1]},
        {"name": "m", "type": "multiclass", "columns": ["m"], "classes": ["x", "y", "z"]},
        {"name": "r", "type": "regression", "columns": ["r"], "classes": []},
        {"name": "s", "type": "survival", "columns": ["t", "e"], "classes": []},
    ]
    split = {"single": {"train": [], "val": [], "test": []}}
    files.write_json(
        "run.json", {"store": store.url, "labels": "", "tasks": tasks, "parts": ["single"], "splits": split}
    )
    files.save_model(
        "single",
        net.state_dict(),
        {
            "model": net.config,
            "tasks": tasks,
            "scaling": {"r": [50.0, 10.0]},
            "crop_size": 16,
            "store": asdict(store.config),
            "best": {},
        },
    )


def test_heatmaps_on_s3_written_where_viewers_read_them(s3_endpoint, tmp_path, capsys):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3, 20, 24)).astype(np.float32)
    values[:, 6:10, 12:18] += 3.0  # a patch the network will respond to
    store = hand_store("s3://slides/heat/store.zarr", {"a": values, "b": rng.normal(size=(3, 12, 12))})
    hand_run("s3://slides/heat/run", store, small_net(2))
    masks = tmp_path / "masks"
    masks.mkdir()
    lesion = np.zeros((20 * 128, 24 * 128), bool)
    lesion[6 * 128 : 10 * 128, 12 * 128 : 18 * 128] = True  # at slide resolution: level-0 pixels
    np.save(masks / "a.npy", lesion)
    (masks / "b.png").write_bytes(b"not a png")  # b fails, alone
    out = "s3://slides/heat/out"
    code = main(
        [
            "heatmap",
            "--run",
            "s3://slides/heat/run",
            "--store",
            "s3://slides/heat/store.zarr",
            "--out",
            out,
            "--masks",
            str(masks),
            "--target",
            "m:*",
            "--views",
            "4",
        ]
    )
    assert code == 1  # b failed
    # The run's report, refreshed in the run on S3 (an untrained run: training and evaluation to come).
    assert "report: s3://slides/heat/run/report.html" in capsys.readouterr().out
    page = fsspec.open("s3://slides/heat/run/report.html", "rt").open().read()
    assert "Not evaluated yet" in page and "No epoch written yet" in page
    table = {(r["slide_id"], r["target"]): r for r in heatmaps_table(out)}
    assert set(table) == {(s, f"m-{c}") for s in "ab" for c in "xyz"}
    assert {table["b", t]["status"] for t in ("m-x", "m-y", "m-z")} == {"failed"}
    assert "b.png" in table["b", "m-x"]["reason"]
    fs, root = fsspec.core.url_to_fs(out)
    assert not fs.exists(f"{root}/b"), "a failed slide writes nothing but its reason"
    for target in ("m-x", "m-y", "m-z"):
        row = table["a", target]
        assert row["status"] == "complete" and row["peak"] > 0 and 0 < row["mass"] <= 1
        # The OME-Zarr heatmap, with plain zarr: one scale level of cells 128 px × 0.5 µm.
        group = zarr.open_group(f"{out}/a/{target}.ome.zarr", mode="r")
        (multiscale,) = group.attrs["multiscales"]
        assert multiscale["version"] == "0.4" and [a["name"] for a in multiscale["axes"]] == ["y", "x"]
        assert multiscale["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [64.0, 64.0]}]
        heatmap = group["0"][:]
        assert heatmap.shape == (20, 24) and heatmap.max() == pytest.approx(1.0) and not heatmap[:, :2].any()
        # The GeoJSON regions, with shapely: the region's cells in level-0 pixels, 128 a cell.
        features = json.loads(fs.cat_file(f"{root}/a/{target}.geojson"))["features"]
        region = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in features])
        assert region.area == pytest.approx(row["region_cells"] * 128**2)
        assert row["region_um2"] == pytest.approx(region.area * 0.25)
        cells = np.argwhere(heatmap > 0)
        assert all(
            shapely.contains_xy(
                shapely.box(0, 0, 24 * 128, 20 * 128), (cells[:, 1] + 0.5) * 128, (cells[:, 0] + 0.5) * 128
            )
        )
        assert fs.cat_file(f"{root}/a/{target}.png")[:8] == fs.cat_file(f"{root}/a/{target}-overlay.png")[:8]
    # Jaccard against the mask given at slide resolution, from the region as written.
    assert all(0 <= table["a", t]["jaccard"] <= 1 for t in ("m-x", "m-y", "m-z"))
    probabilities = [table["a", t]["prediction"] for t in ("m-x", "m-y", "m-z")]
    assert sum(probabilities) == pytest.approx(1.0) and table["a", "m-x"]["predicted_class"] in "xyz"


def heatmaps_table(out: str) -> list[dict]:
    import pyarrow.parquet as pq

    with fsspec.open(f"{out}/heatmaps.parquet", "rb") as f:
        return pq.read_table(f).to_pylist()


def test_bad_targets_slides_and_stores_are_refused_in_one_line(tmp_path, capsys):
    store = hand_store(str(tmp_path / "s.zarr"), {"a": np.ones((3, 8, 8))})
    hand_run(str(tmp_path / "run"), store, small_net())
    base = [
        "heatmap",
        "--run",
        str(tmp_path / "run"),
        "--store",
        str(tmp_path / "s.zarr"),
        "--out",
        str(tmp_path / "o"),
    ]
    (tmp_path / "pick.csv").write_text("slide_id\na\nnope\n")
    for extra, says in (
        (["--target", "grade"], "no task 'grade' in the run"),
        (["--target", "m:w"], "no class 'w' in m (its classes: x, y, z)"),
        (["--target", "b:1"], "b is binary; classes are for multiclass tasks"),
        (["--slides", str(tmp_path / "pick.csv")], "not complete in"),
        (["--masks", str(tmp_path / "none")], "not a folder of"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    other = Store.create_or_open(
        str(tmp_path / "other.zarr"), StoreConfig({**store.config.encoder, "code_size": 5}, 128, 1)
    )
    with pytest.raises(RunError, match="trained on grids of another store configuration"):
        heatmaps(str(tmp_path / "run"), other.url, str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
