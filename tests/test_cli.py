"""The command line: the demo job, slide-info and probe-encoder, end to end."""

import json

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nic_ray.cli import main
from nic_ray.compress import Store
from nic_ray.slides.synthetic_task import digit_patches
from tests.conftest import openslide_rgb


def test_demo_compresses_and_shows_a_grid(tmp_path, capsys, ray_session):
    assert main(["demo", "--out", str(tmp_path), "--slides", "2"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["grid"] == [16, 16] and summary["level"] == 1 and summary["tissue_cells"] > 20
    assert "2 slides: 2 complete" in out
    tissue_map = [line for line in out.splitlines() if line and set(line) <= {"#", "."}]
    assert len(tissue_map) == 16 and sum(line.count("#") for line in tissue_map) == summary["tissue_cells"]
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The slides it wrote are real slides (OpenSlide reads them) and the store holds their grids.
    assert openslide_rgb(tmp_path / "slides" / "synthetic-000.svs", 1, 0, 0, 8, 8).shape == (8, 8, 3)
    assert Store.open(tmp_path / "store.zarr").complete_slides() == ["synthetic-000", "synthetic-001"]


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
    for name, head in (("mlp", MLPClassifier((64,), alpha=1e-2, max_iter=1000, random_state=0)),
                       ("linear", LogisticRegression(max_iter=2000))):
        out = tmp_path / f"{name}.json"
        assert main(["probe-encoder", "--encoder", "mean-rgb", "--patches", str(tmp_path / "set"),
                     "--classifier", name, "--out", str(out)]) == 0
        assert "mean-rgb" in capsys.readouterr().out
        expected = make_pipeline(StandardScaler(), head).fit(colours[train], truth[train]).score(colours[test], truth[test])
        assert json.loads(out.read_text())[0]["accuracy"] == expected, name
