"""Ray Tune sweeps on real stores: ASHA, Optuna, two encoders, a killed driver, bad spaces.

The slides are `write_stained_cohort`'s, compressed twice: mean-RGB and an untrained 8-code NIC encoder
(32-px patches, 32×32 grids). Trials train the small CNN of the training tests for a few epochs.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from nic_ray.cli import main
from nic_ray.compress import compress
from nic_ray.datasets.cohort import write_stained_cohort
from nic_ray.encoders import create_encoder
from nic_ray.encoders.checkpoint import save_encoder
from nic_ray.errors import NicError
from nic_ray.report import sweep_report
from nic_ray.runtime.run_files import RunFiles
from nic_ray.tables import read_table
from nic_ray.train import evaluate, predict
from nic_ray.train.metrics import METRIC_NAMES, task_metrics
from nic_ray.tune import sweep
from tests.conftest import assert_no_credentials, open_page, table_rows

TASK = "label:binary:label"
BASE = {"crop_size": 24, "width": 16, "dropout": 0.0, "batch_size": 8, "steps_per_epoch": 5, "loader_workers": 1}
BASE_FLAGS = ["--crop-size", "24", "--width", "16", "--dropout", "0", "--batch-size", "8", "--steps-per-epoch", "5"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, ray_session):
    """28 slides (16 train, 4 validation, 8 test) in a mean-RGB store and an NIC-8 store."""
    root = write_stained_cohort(tmp_path_factory.mktemp("tune"), 28)
    nic = save_encoder(create_encoder("nic", code_size=8, patch_size=32, width=16), root / "nic8")
    for name, encoder in (("rgb", "mean-rgb"), ("nic8", str(nic))):
        done = compress(
            [str(root / "slides")], str(root / f"{name}.zarr"), encoder=encoder, patch_size=32, progress=False
        )
        assert done.ok
    return root


def space(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_killed_sweep_over_two_encoders_resumes_stops_poor_trials_and_keeps_the_best(
    cohort, tmp_path, ray_session, browser
):
    out, labels = tmp_path / "sweep", cohort / "labels.csv"
    stores = [str(cohort / "rgb.zarr"), str(cohort / "nic8.zarr")]
    searched = space(tmp_path / "space.yaml", "lr: {loguniform: [1.0e-5, 1.0e-2]}\nwidth: {choice: [8, 16]}\n")
    command = [sys.executable, "-m", "nic_ray.cli", "tune", "--store", stores[0], "--store", stores[1]]
    command += ["--labels", str(labels), "--task", TASK, "--out", str(out), "--space", searched]
    # ASHA keeps 1 in 4 at epoch 1: a trial worse than the first quarter of those before it stops.
    command += ["--trials", "6", "--epochs", "3", "--grace-period", "1", "--reduction-factor", "4"]
    command += ["--max-concurrent", "2", "--loader-workers", "1", *BASE_FLAGS]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (finished := finished_models(out)):
        assert driver.poll() is None and time.monotonic() < deadline, "no trial finished"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not (out / "trials.parquet").exists(), "the sweep ended before it could be killed"
    written = {path: os.stat(path).st_mtime_ns for path in finished}
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert {path: os.stat(path).st_mtime_ns for path in finished} == written  # not trained again

    trials = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(trials) == 6 and len(finished_models(out)) == 6  # a stopped trial keeps its best epoch
    assert {t["store"] for t in trials} == set(stores)
    assert {t["status"] for t in trials} <= {"finished", "stopped"}
    stopped = [t for t in trials if t["status"] == "stopped"]
    # ASHA's one rung below 3 epochs is epoch 1; its workers may train on until they hear of it.
    assert stopped and all(t["stopped_by"].startswith("ASHA at epoch 1: ") for t in stopped), trials
    # Each trial's metric is the best epoch of its own history; the best trial is the best of them.
    for t in trials:
        history = csv.DictReader(io.StringIO(RunFiles(t["run"]).read("single/history.csv").decode()))
        losses = [float(row["val_loss"]) for row in history]
        assert len(losses) == t["epochs"] and t["val_loss"] == pytest.approx(min(losses))
        kept = RunFiles(t["run"]).read_json("single/model/config.json")["best"]
        assert kept["val_loss"] == pytest.approx(t["val_loss"])
    best = min(trials, key=lambda t: t["val_loss"])
    assert trials[0] == best
    config = RunFiles(out / "best").read_json("single/model/config.json")
    assert config["best"]["val_loss"] == pytest.approx(best["val_loss"])
    assert config["model"]["width"] == best["width"] and config["trained_on"] == best["store"]
    printed = rerun.stdout
    assert "tuned on the validation slides of single" in printed and best["trial_id"] in printed
    assert f"nic-ray train --store {best['store']}" in printed and f"--width {best['width']}" in printed
    # The sweep's report: its trials table is trials.parquet; each searched option has its plot.
    assert f"report: {out}/report.html" in printed
    page = open_page(browser, out / "report.html", tmp_path / "sweep-report.png")
    header, *shown = table_rows(page, "trials")
    assert header == [c for c in trials[0] if c != "run"]
    assert [(row[0], row[header.index("status")]) for row in shown] == [(t["trial_id"], t["status"]) for t in trials]
    captions = page.eval_on_selector_all("figcaption", "cs => cs.map(c => c.textContent)")
    assert {"store", "lr", "width", "val_loss per epoch"} <= set(captions), captions
    # best/ is a run like any other: evaluate and predict take it as it is.
    table = evaluate(str(out / "best"), best["store"], str(labels), crops=2, views=1, resamples=20)
    rows = {(r["subset"], r["metric"]): r for r in table.to_pylist()}
    assert rows[("test", "auc")]["slides"] == 8
    assert predict(str(out / "best"), best["store"], crops=2, views=1).num_rows == 28
    # Another space on this sweep is refused.
    other = space(tmp_path / "other.yaml", "lr: {loguniform: [1.0e-3, 1.0e-1]}\n")
    with pytest.raises(NicError, match="holds a sweep with other data or options; use another --out"):
        sweep(stores, labels, [TASK], out, space=other, trials=6, epochs=3, **BASE)


def test_a_sweep_on_s3_writes_its_trials_and_best_run_there(cohort, s3_endpoint):
    out = f"s3://slides/sweeps/{uuid.uuid4().hex}"
    searched = space(cohort / "s3-space.yaml", "lr: {choice: [0.001, 0.003]}\n")
    result = sweep(
        [cohort / "rgb.zarr"],
        cohort / "labels.csv",
        [TASK],
        out,
        space=searched,
        trials=1,
        epochs=1,
        scheduler="none",
        search="random",
        **BASE,
    )
    assert read_table(f"{out}/trials.parquet", "trials").num_rows == 1
    assert result.best["run"].startswith(out) and RunFiles(f"{out}/best").parts() == ["single"]
    table = predict(f"{out}/best", str(cohort / "rgb.zarr"), crops=1, views=1)
    assert table.num_rows == 28
    # Its report too; nothing the sweep wrote holds the S3 credentials. (Ray Tune itself copies
    # AWS_* variables into its trials' runtime_env, which Ray's logs show: docs/operations.md.)
    sweep_report(out)
    assert_no_credentials([out])


def finished_models(sweep) -> list[str]:
    trials = sweep / "trials"
    return [str(p) for p in trials.glob("*/single/model/config.json")] if trials.exists() else []


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrr: {loguniform: [0.001, 0.1]}", "unknown option 'lrr'"),
        ("lr: {loguniform: [0.1, 0.001]}", "lr: loguniform [0.1, 0.001] is empty"),
        ("lr: {loguniform: [0, 0.1]}", "lr: loguniform needs low > 0"),
        ("lr: {normal: [0, 1]}", "lr: expected a constant or one of uniform, loguniform, randint, choice"),
        ("width: {uniform: [8, 32]}", "width: takes integers; use randint or choice"),
        ("depth: {choice: [4, 6]}", "depth 6 needs crops of at least 95 cells, more than crop_size 24"),
        ("strides: {choice: [[2, 2, 2, 1, 1]]}", "strides 2 2 2 1 1 needs crops of at least 47 cells"),
        ("crop_size: {choice: [16, 24]}\ndepth: 4", "depth 4 needs crops of at least 23 cells, more than crop_size 16"),
        ("batch_size: {choice: [2, 8]}", "batch_size 2 gives fewer than 2 crops to each of 2 workers"),
        ("epochs: 5", "epochs is not searched; give it as --epochs"),
        ("grid_dihedral: {choice: [yes, 3]}", "grid_dihedral: 3 is not valid here (takes true or false)"),
        ("- lr", "expected a mapping of option: distribution"),
        ("lr: {loguniform: [0.001", "cannot read the search space"),
    ],
)
def test_bad_spaces_are_refused_in_one_line_before_any_trial(tmp_path, capsys, text, message):
    out = tmp_path / "sweep"  # checked before the store and the labels are opened
    argv = ["tune", "--store", str(tmp_path / "a.zarr"), "--labels", str(tmp_path / "labels.csv"), "--task", TASK]
    argv += ["--out", str(out), "--space", space(tmp_path / "bad.yaml", text), "--workers", "2", *BASE_FLAGS]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error and "bad.yaml" in error, error
    assert not out.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"workers": 3, "cpus_per_worker": 2}, "3 training workers × 2 CPU, but the Ray cluster has at most 4"),
        ({"gpus_per_worker": 1}, "each training worker needs 1 GPU, but the Ray cluster has at most 0"),
        ({"metric": "val_auc_os"}, "--metric val_auc_os: not reported by these tasks"),
        ({"trials": 0}, "--trials and --grace-period must be at least 1"),
    ],
)
def test_impossible_requests_are_refused_before_any_trial(cohort, tmp_path, options, message):
    out = tmp_path / "sweep"
    with pytest.raises(NicError, match=message):
        sweep([cohort / "rgb.zarr"], cohort / "labels.csv", [TASK], out, **BASE, **options)
    assert not (out / "tune").exists()


def test_the_default_space_fits_the_crop_and_the_metric_names_are_those_reported():
    from nic_ray.train.options import TrainOptions
    from nic_ray.tune import default_space

    for crop in (24, 100, 400):
        dims = default_space(TrainOptions(crop_size=crop)).dimensions
        assert max(dims["crop_size"].values) == crop and set(dims) >= {"lr", "weight_decay", "depth", "dropout"}
    rng = np.random.default_rng(0)
    for kind, outputs in (("binary", 1), ("multiclass", 3), ("regression", 1), ("survival", 1)):
        target = np.c_[rng.uniform(size=20), rng.integers(0, 2, 20)] if kind == "survival" else rng.integers(0, 3, 20)
        target = (target % 2) if kind == "binary" else target
        reported = set(task_metrics(kind, target.astype(float), rng.normal(size=(20, outputs)))) - {"n"}
        assert reported == set(METRIC_NAMES[kind])
