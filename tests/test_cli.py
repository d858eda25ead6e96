"""The command line: the demo job, slide-info and probe-encoder, end to end."""

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nic_ray.cli import main
from nic_ray.datasets.synthetic_task import digit_patches
from nic_ray.store import Store
from nic_ray.train import predict
from tests.conftest import open_page


def test_the_demo_runs_the_whole_job_then_reuses_what_is_done(tmp_path, capsys, ray_session, browser):
    """A reduced demo (28 slides, 8 epochs): its figures are those of the files it wrote, checked
    with scikit-learn on predict's output; its reports open in Chromium; run again, nothing is
    compressed or trained again."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--slides", "28", "--epochs", "8"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compressed"] == {"complete": 29}  # and the CMU slide
    labels = {r["slide_id"]: r for r in csv.DictReader(open(out / "labels.csv"))}
    test = sorted(s for s, r in labels.items() if r["split"] == "test")
    predicted = {r["slide_id"]: r["label"] for r in predict(str(out / "run"), str(out / "store.zarr")).to_pylist()}
    auc = roc_auc_score([int(labels[s]["label"]) for s in test], [predicted[s] for s in test])
    assert summary["auc"][0] == pytest.approx(auc) and summary["auc"][1] <= auc <= summary["auc"][2]
    assert f"test AUC {auc:.3f} [95% CI" in printed
    drawn = pq.read_table(out / "heatmaps" / "heatmaps.parquet").to_pylist()
    assert {r["slide_id"] for r in drawn} == {*test, "cmu_small_region"} and {r["status"] for r in drawn} == {
        "complete"
    }
    positive = [r["jaccard"] for r in drawn if labels.get(r["slide_id"], {}).get("label") == "1"]
    assert summary["jaccard"] == pytest.approx(np.mean(positive)) and summary["jaccard_slides"] == len(positive)
    for name, report in (("run", summary["report"]), ("store", summary["store_report"])):
        assert f"{report}" in printed
        open_page(browser, report, tmp_path / f"demo-{name}-report.png")

    model = out / "run" / "single" / "model" / "model.safetensors"
    trained = model.stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--slides", "28", "--epochs", "8"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["compressed"] == {"skipped": 29} and model.stat().st_mtime_ns == trained
    assert again["auc"] == summary["auc"]


def test_slide_info_on_the_cmu_slide(cmu_slide, capsys):
    assert main(["slide-info", str(cmu_slide)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vendor"] == "aperio" and info["fast_levels"] == [0]
    assert info["grid"]["shape"] == [24, 18] and info["grid"]["mpp"] == 0.499
    assert 0 < info["tissue_cells"] < 24 * 18


def test_probe_encoder_scores_mean_rgb_as_sklearn_on_mean_colours(tmp_path, capsys):
    patches, labels = digit_patches(100, seed=3)
    for i, (p, y) in enumerate(zip(patches, labels)):
        (tmp_path / "set" / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(tmp_path / "set" / str(y) / f"{i:03d}.png")
    order = np.argsort([f"{y}/{i:03d}" for i, y in enumerate(labels)], kind="stable")  # the folder's order
    colours, truth = (patches[order].reshape(100, -1, 3).mean(1) / 255).astype(np.float32), labels[order]
    train, test = train_test_split(np.arange(100), test_size=0.3, random_state=0, stratify=truth)
    for name, head in (
        ("mlp", MLPClassifier((64,), alpha=1e-2, max_iter=1000, random_state=0)),
        ("linear", LogisticRegression(max_iter=2000)),
    ):
        out = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "probe-encoder",
                    "--encoder",
                    "mean-rgb",
                    "--patches",
                    str(tmp_path / "set"),
                    "--classifier",
                    name,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert "mean-rgb" in capsys.readouterr().out
        expected = (
            make_pipeline(StandardScaler(), head).fit(colours[train], truth[train]).score(colours[test], truth[test])
        )
        assert json.loads(out.read_text())[0]["accuracy"] == expected, name


LIGHT = """
import sys
from nic_ray.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "ray.train", "ray.data", "ray.tune") if m in sys.modules)
print("loaded:", ",".join(heavy) or "-")
sys.exit(code)
"""


def test_help_status_and_slide_info_load_neither_torch_nor_ray_train(tmp_path, cmu_slide):
    """Each in a fresh interpreter, whose sys.modules tells what the subcommand imported."""
    import subprocess
    import sys

    from nic_ray.store import StoreConfig

    encoder = {"name": "mean-rgb", "sha256": "0" * 64, "code_size": 3, "patch_size": 128, "mpp": 0.5}
    Store.create_or_open(str(tmp_path / "s.zarr"), StoreConfig(encoder, 128, 1))
    for argv, code in (
        (["--help"], 0),
        (["train", "--help"], 0),
        (["status", str(tmp_path / "s.zarr")], 0),
        (["slide-info", str(cmu_slide)], 0),
    ):
        run = subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True)
        assert run.returncode == code, run.stderr
        if argv[-1] != "--help":
            assert run.stdout.splitlines()[-1] == "loaded: -", (argv, run.stdout[-200:])
    # --help exits inside argparse before the line above: check it the same way, by hand.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from nic_ray.cli import build_parser; build_parser();"
            "print(sorted(m for m in ('torch', 'ray.train', 'ray.data') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_each_option_is_defined_once_for_the_cli_and_python():
    """The command line's defaults are the option dataclasses' own: nothing written twice."""
    from dataclasses import asdict

    from nic_ray.cli import build_parser
    from nic_ray.compress.options import CompressOptions
    from nic_ray.encoder_training.options import EncoderOptions
    from nic_ray.options import options_of
    from nic_ray.runtime.resources import Resources
    from nic_ray.train.options import EvaluateOptions, TrainOptions

    parser = build_parser()
    for argv, dataclasses in (
        (["compress", "x.svs", "--store", "s"], (CompressOptions,)),
        (["train", "--store", "s", "--labels", "l", "--task", "t:binary:y", "--out", "o"], (TrainOptions, Resources)),
        (["train-encoder", "--method", "vae", "--out", "o"], (EncoderOptions, Resources)),
        (["evaluate", "--run", "r", "--store", "s", "--labels", "l"], (EvaluateOptions,)),
    ):
        expected = {k: v for d in dataclasses for k, v in asdict(d()).items()}
        assert options_of(parser.parse_args(argv), *dataclasses) == expected
    args = parser.parse_args(
        [
            "compress",
            "x.svs",
            "--store",
            "s",
            "--encoder-resource",
            "ssd=2",
            "--encoder-resource",
            "gpu_node",
            "--overwrite",
            "--orientations",
            "8",
        ]
    )
    assert (args.encoder_resources, args.overwrite, args.orientations) == ({"ssd": 2.0, "gpu_node": 1.0}, True, 8)
    args = parser.parse_args(
        [
            "train",
            "--store",
            "s",
            "--labels",
            "l",
            "--task",
            "t:binary:y",
            "--out",
            "o",
            "--no-grid-dihedral",
            "--strides",
            "2",
            "1",
        ]
    )
    assert args.grid_dihedral is False and args.strides == [2, 1]


def test_encoders_default_to_what_the_cluster_holds_beside_planning(ray_session):
    """The session's Ray has 4 CPUs: one goes to planning slides, three 1-CPU encoders fit beside it."""
    from nic_ray.ray_cluster import fitting_count

    planning = ("planning slides", {"CPU": 1})
    assert fitting_count({"CPU": 1, "GPU": 0}, besides=planning) == 3
    assert fitting_count({"CPU": 2}, besides=planning) == 1
    assert fitting_count({"CPU": 0.5}, besides=planning) == 6


def test_package_exports_are_what_they_name_after_every_module_is_imported():
    """A lazy export must not be shadowed by a submodule of the same name (Python binds
    ``package.name`` to the submodule once it is imported)."""
    import importlib
    import pkgutil
    import types

    import nic_ray

    for module in pkgutil.walk_packages(nic_ray.__path__, "nic_ray."):
        importlib.import_module(module.name)
    for package in (
        "nic_ray.compress",
        "nic_ray.train",
        "nic_ray.encoder_training",
        "nic_ray.runtime",
        "nic_ray.explain",
    ):
        imported = importlib.import_module(package)
        for name in dir(imported):
            assert not isinstance(getattr(imported, name), types.ModuleType), f"{package}.{name}"
