"""The pieces under the training loop: splits, the crop loader on real stores, balanced draws,
per-task losses and metrics, training-state checkpoints."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import log_loss, roc_auc_score

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import write_slide
from nic_ray.dihedral import dihedral
from nic_ray.runtime.checkpoint import load_checkpoint, save_checkpoint
from nic_ray.store import Store
from nic_ray.train import bootstrap_intervals, cox_loss, load_labels, parse_task, plan_splits, task_loss, task_metrics
from nic_ray.train.crops import crop_pmf, keep_on_grid, read_crop
from nic_ray.train.dataset import CropDataset, CropLoader, Draws, balanced_weights
from nic_ray.train.labels import LabelError
from nic_ray.train.nic_cnn import NICNet
from tests.conftest import cell_colours


def labels_for(tmp_path, text, tasks=("c:binary:c",)):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    ids = [line.split(",")[0] for line in text.splitlines()[1:]]
    return load_labels(str(path), [parse_task(t) for t in tasks], ids)


def test_generated_folds_rotate_test_validation_train(tmp_path):
    rows = "".join(f"s{i},{'ab'[i % 4 == 0]}\n" for i in range(40))  # 10 of class b
    labels = labels_for(tmp_path, "slide_id,c\n" + rows)
    parts = plan_splits(labels, folds=4, seed=3)
    assert list(parts) == ["fold-0", "fold-1", "fold-2", "fold-3"]
    tested = [s for p in parts.values() for s in p["test"]]
    assert sorted(tested) == sorted(labels.slide_ids)  # every slide tested exactly once
    for f, part in enumerate(parts.values()):
        assert len(part["train"]) == 20 and len(part["val"]) == 10 and len(part["test"]) == 10  # 2 : 1 : 1
        assert part["val"] == parts[f"fold-{(f + 1) % 4}"]["test"]
        assert not set(part["train"]) & (set(part["val"]) | set(part["test"]))
        b = [s for s in part["test"] if int(s[1:]) % 4 == 0]
        assert len(b) in (2, 3)  # stratified: 10 b slides over 4 folds
    assert plan_splits(labels, folds=4, seed=3) == parts
    assert plan_splits(labels, folds=4, seed=4) != parts


def test_split_and_fold_columns(tmp_path):
    labels = labels_for(tmp_path, "slide_id,c,split\na,x,train\nb,y,train\nc,x,validation\nd,y,test\n")
    assert plan_splits(labels) == {"single": {"train": ["a", "b"], "val": ["c"], "test": ["d"]}}
    labels = labels_for(tmp_path, "slide_id,c,fold\na,x,7\nb,y,7\nc,x,9\nd,y,8\ne,x,9\n")
    parts = plan_splits(labels)
    assert parts["fold-0"] == {"train": ["c", "e"], "val": ["d"], "test": ["a", "b"]}
    with pytest.raises(LabelError, match="at least 3 folds"):
        plan_splits(labels_for(tmp_path, "slide_id,c,fold\na,x,1\nb,y,2\n"))
    with pytest.raises(LabelError, match="split values must be train, val or test, not 'dev'"):
        labels_for(tmp_path, "slide_id,c,split\na,x,train\nb,y,dev\n")
    with pytest.raises(LabelError, match="fold values must be integers"):
        labels_for(tmp_path, "slide_id,c,fold\na,x,1\nb,y,two\n")


@pytest.fixture(scope="module", params=["local", "s3"])
def colour_store(request, tmp_path_factory, ray_session, s3_endpoint):
    """A 6×5 grid of distinct cell colours (mean-RGB), in a local store or one on S3."""
    root = tmp_path_factory.mktemp("colours")
    image = np.kron(cell_colours(6, 5), np.ones((128, 128, 1), np.uint8))
    path = write_slide(root / "c.tiff", image, 0.5, compression="zlib", downsamples=(1,))
    store = str(root / "s.zarr") if request.param == "local" else f"s3://slides/stores/colours-{id(root)}.zarr"
    assert compress([str(path)], store, progress=False).ok
    return store


@pytest.mark.parametrize("grid_dihedral", [False, True])
def test_loader_threads_read_true_crops_from_the_store(colour_store, grid_dihedral):
    grid = Store.open(colour_store).read_embeddings("c").astype(np.float32)
    targets = {"y": np.array([1.0]), "os": np.array([[5.0, 1.0]])}  # survival: (time, event) per slide
    data = CropDataset(colour_store, ["c"], targets, crop_size=4, grid_dihedral=grid_dihedral)
    loader = CropLoader(data, Draws(np.array([1.0]), count=14, seed=0), batch_size=4, workers=2)
    centres = keep_on_grid(np.argwhere(crop_pmf(Store.open(colour_store).read_tissue("c")) > 0), grid.shape[-2:], 4)
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # the last 2 draws make no full batch
    turned = set()
    for crops, targets in batches:
        assert crops.shape == (4, 3, 4, 4) and crops.dtype == torch.float16
        assert targets["y"].tolist() == [[1.0]] * 4 and targets["os"].tolist() == [[5.0, 1.0]] * 4
        for crop in crops.numpy():
            # Each crop is the grid around a centre the pmf allows, kept on the grid (turned by
            # some D4 element if asked), read independently here; the cell colours are distinct.
            matches = [
                t
                for c in centres
                for t in range(8 if grid_dihedral else 1)
                if np.array_equal(crop, dihedral(read_crop(grid, 0, c, 4), t, dims=(1, 2)))
            ]
            assert matches
            turned.update(matches)
    assert len(turned) > 3 if grid_dihedral else turned == {0}


def test_balanced_draws_even_out_classes():
    classes = np.array([0] * 30 + [1] * 10 + [np.nan] * 5)
    draws = np.array([i for i, _ in Draws(balanced_weights(classes), count=6000, seed=1)])
    shares = [np.isin(draws, np.flatnonzero(m)).mean() for m in (classes == 0, classes == 1, np.isnan(classes))]
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.03)
    again = Draws(balanced_weights(classes), count=10, seed=1)
    assert list(again) == list(Draws(balanced_weights(classes), count=10, seed=1))
    again.set_epoch(1)
    assert list(again) != list(Draws(balanced_weights(classes), count=10, seed=1))


def test_task_losses_against_independent_computations():
    logits = torch.tensor([[0.3], [-1.2], [2.0], [0.1]])
    y = torch.tensor([1.0, 0.0, math.nan, 1.0])
    p = 1 / (1 + np.exp(-logits.numpy()[[0, 1, 3], 0]))
    assert float(task_loss("binary", logits, y)) == pytest.approx(log_loss([1, 0, 1], p), rel=1e-6)
    multi = torch.tensor([[0.2, 1.0, -0.5], [1.5, 0.0, 0.3], [0.0, 0.0, 0.0]])
    cls = torch.tensor([1.0, 2.0, math.nan])
    probs = torch.softmax(multi[:2], 1).numpy()
    assert float(task_loss("multiclass", multi, cls)) == pytest.approx(
        log_loss([1, 2], probs, labels=[0, 1, 2]), rel=1e-6
    )
    value = torch.tensor([[1.0], [2.0], [3.0]])
    assert float(task_loss("regression", value, torch.tensor([1.5, math.nan, 2.0]))) == pytest.approx((0.25 + 1) / 2)
    risk = torch.tensor([[0.5], [-0.2], [1.3], [0.0]])
    surv = torch.tensor([[5.0, 1], [8.0, 0], [math.nan, 1], [8.0, 1]])
    expected = cox_loss(risk[[0, 1, 3], 0], torch.tensor([5.0, 8.0, 8.0]), torch.tensor([1, 0, 1]))
    assert float(task_loss("survival", risk, surv)) == pytest.approx(float(expected))
    nothing = task_loss("binary", logits.requires_grad_(), torch.full((4,), math.nan))
    assert float(nothing) == 0 and nothing.requires_grad  # every head takes part in a step


def test_task_metrics_and_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    out = (y + rng.normal(0, 1, 200))[:, None]
    m = task_metrics("binary", y, out)
    assert m["auc"] == pytest.approx(roc_auc_score(y, out[:, 0])) and m["n"] == 200
    tied = out.round(0)  # many equal scores: each tie counts a half
    assert task_metrics("binary", y, tied)["auc"] == pytest.approx(roc_auc_score(y, tied[:, 0]))
    assert m["accuracy"] == pytest.approx(np.mean((out[:, 0] > 0) == y))
    low, high = bootstrap_intervals("binary", y, out, resamples=300)["auc"]
    assert low < m["auc"] < high and high - low < 0.2
    target = rng.normal(size=50)
    pred = (target + rng.normal(size=50))[:, None]
    r = task_metrics("regression", target, pred)
    assert r["spearman"] == pytest.approx(spearmanr(target, pred[:, 0]).statistic)
    assert r["pearson"] == pytest.approx(pearsonr(target, pred[:, 0]).statistic)
    assert math.isnan(task_metrics("binary", np.ones(5), np.zeros((5, 1)))["auc"])  # one class: undefined


def test_training_state_round_trips(tmp_path):
    torch.manual_seed(0)
    net = NICNet(3, {"y": 2}, width=8, strides=(2, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=1 / 3, patience=0)
    for loss in (1.0, 2.0):
        optimizer.zero_grad()
        net(torch.rand(4, 3, 7, 7))["y"].sum().backward()
        optimizer.step()
        scheduler.step(loss)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    state = {"epoch": 2, "history": [{"epoch": 1}], "scheduler": scheduler.state_dict()}
    save_checkpoint(tmp_path, {"model": net.state_dict(), "best": best}, {"adam": optimizer}, state)

    other = NICNet(3, {"y": 2}, width=8, strides=(2, 1))
    opt2 = torch.optim.Adam(other.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, factor=1 / 3, patience=0)
    state, weights = load_checkpoint(tmp_path, {"adam": opt2})
    other.load_state_dict(weights["model"])
    sched2.load_state_dict(state.pop("scheduler"))
    best2 = weights["best"]
    assert state == {"epoch": 2, "history": [{"epoch": 1}]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors",
        "model.safetensors",
        "optimizer-adam.safetensors",
        "state.json",
    ]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)
        torch.testing.assert_close(best2[k], best[k])
    saved, loaded = optimizer.state_dict()["state"], opt2.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for i in saved:
        torch.testing.assert_close(loaded[i]["exp_avg_sq"], saved[i]["exp_avg_sq"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 / 3) and sched2.state_dict() == scheduler.state_dict()
