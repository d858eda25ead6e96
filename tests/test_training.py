"""Slide-level learning end to end on real stores: Ray Train, checkpoints, faults, predict, evaluate.

The slides are NIC synthetic slides whose tilted rectangle is inked and tinted with a colour
between haematoxylin purple (s = 0) and brown (s = 1): the binary label is s > 0.5, and survival
times are exponential with log-hazard 5·s. Compressed with mean-RGB on 32-px patches, each slide
is a 32×32 grid; a small NIC CNN (width 16, 4 layers) on 24-cell crops learns both.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from nic_ray.compress import Store, compress
from nic_ray.errors import NicError
from nic_ray.slides.synthetic import write_slide
from nic_ray.slides.synthetic_task import nic_synthetic_case
from nic_ray.train import c_index, evaluate, predict, train
from nic_ray.train.predict import predict_outputs
from nic_ray.train.run_files import RunError, RunFiles
from tests.conftest import train_workers, wait_for_checkpoints

PURPLE, BROWN = np.array([80, 40, 140]), np.array([150, 90, 30])
SMALL_CNN = {"crop_size": 24, "strides": (2, 2, 1, 1), "width": 16, "dropout": 0.0, "lr": 3e-3, "batch_size": 16,
             "steps_per_epoch": 15, "loader_workers": 1}
TASKS = ["label:binary:label", "os:survival:time,event"]
SPLIT = ["train", "train", "train", "train", "val", "test", "test"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_session):
    """56 slides (32 train, 8 validation, 16 test) compressed into a store; the label table."""
    root = tmp_path_factory.mktemp("learning")
    (root / "slides").mkdir()
    rng = np.random.default_rng(0)
    rows = ["slide_id,label,time,event,split"]
    for i in range(56):
        s = rng.uniform()
        stain = tuple((PURPLE * (1 - s) + BROWN * s).round().astype(int))
        case = nic_synthetic_case(size=(1024, 1024), n_digits=120, rect_size=(384, 256), digit_px=32, seed=i,
                                  lesion_stain=stain)
        write_slide(root / "slides" / f"s{i:03d}.tiff", case.image, mpp=0.5, tile=256, downsamples=(1, 4))
        death, censor = rng.exponential(np.exp(-5 * s)), rng.exponential(0.5)
        rows.append(f"s{i:03d},{int(s > 0.5)},{min(death, censor):.5f},{int(death <= censor)},{SPLIT[i % 7]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert compress([str(root / "slides")], str(root / "store.zarr"), patch_size=32, progress=False).ok
    return root


def csv_dicts(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def history(run, part="single") -> list[dict]:
    text = RunFiles(run).read(f"{part}/history.csv").decode()
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def test_learns_label_and_survival_on_held_out_slides(dataset, tmp_path):
    run = tmp_path / "run"
    result = train(dataset / "store.zarr", dataset / "labels.csv", TASKS, run, epochs=20, **SMALL_CNN)
    assert set(result.parts) == {"single"} and result.not_in_store == [] and result.not_in_table == []

    # predict: one row a slide; checked against the labels with sklearn and lifelines directly.
    table = predict(str(run), str(dataset / "store.zarr"), out=str(tmp_path / "pred.parquet")).to_pylist()
    assert pq.read_table(tmp_path / "pred.parquet").num_rows == 56 == len(table)
    labels = {r["slide_id"]: r for r in csv_dicts(dataset / "labels.csv")}
    test = [r for r in table if labels[r["slide_id"]]["split"] == "test"]
    y = [int(labels[r["slide_id"]]["label"]) for r in test]
    auc = roc_auc_score(y, [r["label"] for r in test])
    cidx = c_index([float(labels[r["slide_id"]]["time"]) for r in test], [r["os"] for r in test],
                   [int(labels[r["slide_id"]]["event"]) for r in test])
    assert all(0 <= r["label"] <= 1 for r in table)
    assert auc > 0.8, auc  # chance is 0.5
    assert cidx > 0.7, cidx

    # evaluate: the same numbers for the test split, with intervals around them.
    metrics = {(r["subset"], r["task"], r["metric"]): r for r in evaluate(str(run), str(dataset / "store.zarr"),
                                                                           str(dataset / "labels.csv"), resamples=200).to_pylist()}
    assert metrics[("test", "label", "auc")]["value"] == pytest.approx(auc)
    assert metrics[("test", "os", "c_index")]["value"] == pytest.approx(cidx)
    assert metrics[("test", "os", "c_index")]["slides"] == 16
    low, high = metrics[("test", "label", "auc")]["low"], metrics[("test", "label", "auc")]["high"]
    assert low <= auc <= high
    assert (run / "evaluation.parquet").exists()

    # The model directory holds everything needed to use it, and nothing pickled.
    config = json.loads((run / "single" / "model" / "config.json").read_text())
    assert config["model"]["heads"] == {"label": 1, "os": 1} and config["crop_size"] == 24
    assert sorted(os.listdir(run / "single" / "model")) == ["config.json", "model.safetensors"]
    epochs = [h["epoch"] for h in history(run)]
    assert epochs == list(range(1, len(epochs) + 1)) and config["best"]["epoch"] in epochs


def test_two_workers_resume_after_a_worker_is_killed(dataset, s3_endpoint):
    """Checkpoints go to an S3 endpoint; one of two workers is killed mid-run."""
    run = f"s3://slides/runs/{uuid.uuid4().hex[:8]}"
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=train(
        dataset / "store.zarr", dataset / "labels.csv", TASKS[:1], run, epochs=8, workers=2, max_failures=2,
        **SMALL_CNN)))
    thread.start()
    wait_for_checkpoints(run, 2)
    victims = train_workers()
    assert len(victims) == 2
    victims[1].kill()
    thread.join(timeout=300)
    assert "result" in done, "training did not finish after a worker was killed"
    rows = history(run)
    assert [r["epoch"] for r in rows] == list(range(1, 9))  # every epoch once: resumed, not restarted
    restarted = [r["epoch"] for r in rows if r["starts"] == 2]
    assert restarted and restarted[0] > 1, rows


def test_restarted_job_resumes_from_its_last_checkpoint(dataset, tmp_path, ray_session):
    run = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "nic_ray.cli", "train", "--store", str(dataset / "store.zarr"), "--labels",
               str(dataset / "labels.csv"), "--task", TASKS[0], "--out", str(run), "--epochs", "6",
               "--crop-size", "24", "--strides", "2", "2", "1", "1", "--width", "16", "--dropout", "0",
               "--steps-per-epoch", "15", "--loader-workers", "1"]
    driver = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for_checkpoints(run, 2)
    os.killpg(driver.pid, 9)
    driver.wait()
    assert not (run / "single" / "model").exists()
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    rows = history(run)
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert rows[0]["starts"] == 1 and rows[-1]["starts"] == 2
    # Run again: nothing to do, the same model.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "best epoch" in again.stdout


def test_other_options_on_an_existing_run_are_refused(dataset, tmp_path):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "run.json").write_text(json.dumps({"store": "elsewhere"}))
    with pytest.raises(RunError, match="holds a run with other data or options; use another --out"):
        train(dataset / "store.zarr", dataset / "labels.csv", TASKS, run, **SMALL_CNN)


@pytest.mark.parametrize("resources, message", [
    ({"loader_workers": 0}, "--loader-workers 0: crops need at least one loader thread"),
    ({"batch_size": 3, "workers": 2}, "--batch-size 3 gives fewer than 2 crops per worker; BatchNorm needs 2"),
])
def test_resources_that_cannot_train_are_refused(dataset, tmp_path, resources, message):
    with pytest.raises(NicError, match=message):
        train(dataset / "store.zarr", dataset / "labels.csv", TASKS, tmp_path / "run", **{**SMALL_CNN, **resources})
    assert not (tmp_path / "run").exists()


def test_cross_validation_pools_out_of_fold_predictions(dataset, tmp_path):
    # The table's split column is dropped: 3 seeded folds, each slide tested by the model that never saw it.
    table = tmp_path / "labels.csv"
    table.write_text("".join(",".join(line.split(",")[:4]) + "\n" for line in (dataset / "labels.csv").read_text().splitlines()))
    run = tmp_path / "cv"
    result = train(dataset / "store.zarr", table, TASKS[:1], run, epochs=2, folds=3, **SMALL_CNN)
    assert list(result.parts) == ["fold-0", "fold-1", "fold-2"]
    rows = evaluate(str(run), str(dataset / "store.zarr"), str(table), views=2, crops=3, resamples=50).to_pylist()
    metrics = {(r["subset"], r["metric"]): r for r in rows}
    assert {r["subset"] for r in rows} == {"fold-0 test", "fold-1 test", "fold-2 test", "all (out-of-fold)"}
    assert metrics[("all (out-of-fold)", "auc")]["slides"] == 56

    files, store = RunFiles(run), Store.open(dataset / "store.zarr")
    splits = files.read_json("run.json")["splits"]
    labels = {r["slide_id"]: int(r["label"]) for r in csv_dicts(table)}
    ids, scores = [], []
    for part in result.parts:
        net, config = files.load_model(part)
        test = splits[part]["test"]
        ids += test
        scores += list(predict_outputs(net, store, test, config["crop_size"], crops=3, views=2)["label"][:, 0])
    assert metrics[("all (out-of-fold)", "auc")]["value"] == pytest.approx(roc_auc_score([labels[s] for s in ids], scores))
