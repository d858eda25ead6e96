"""The command line: the demo job and slide-info, end to end."""

import json

from nic_ray.cli import main
from nic_ray.compress import Store
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
