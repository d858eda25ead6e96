"""The command line: the demo job and slide-info, end to end."""

import json

from nic_ray.cli import main
from tests.conftest import openslide_rgb


def test_demo_writes_slides_and_shows_a_grid(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--slides", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["grid"] == [16, 16] and report["level"] == 1 and report["tissue_cells"] > 20
    tissue_map = [line for line in out.splitlines() if line and set(line) <= {"#", "."}]
    assert len(tissue_map) == 16 and sum(line.count("#") for line in tissue_map) == report["tissue_cells"]
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The slide it wrote is a real slide: OpenSlide reads it.
    assert openslide_rgb(report["slides"][0], 1, 0, 0, 8, 8).shape == (8, 8, 3)


def test_slide_info_on_the_cmu_slide(cmu_slide, capsys):
    assert main(["slide-info", str(cmu_slide)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vendor"] == "aperio" and info["fast_levels"] == [0]
    assert info["grid"]["shape"] == [24, 18] and info["grid"]["mpp"] == 0.499
    assert 0 < info["tissue_cells"] < 24 * 18
