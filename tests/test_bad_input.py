"""Bad slides get one clear line naming the file; the command exits 2 without a traceback."""

import numpy as np
import pytest

from nic_ray.cli import main
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.errors import SlideError
from nic_ray.slides import open_slide, read_cells, tile_grid


@pytest.fixture
def good(tmp_path):
    return write_slide(tmp_path / "good.svs", TissuePainter(2048, 2048, seed=5), 0.5, format="svs", downsamples=(1, 4))


def bad_files(tmp_path, good):
    data = open(good, "rb").read()
    (tmp_path / "truncated.svs").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "empty.svs").write_bytes(b"")
    (tmp_path / "notes.svs").write_text("Patient 12, H&E, block A\n" * 40)
    (tmp_path / "folder.svs").mkdir()
    return {
        "truncated.svs": "truncated",
        "empty.svs": "empty file",
        "notes.svs": "not a slide format",
        "missing.svs": "no such file",
        "folder.svs": "is a directory",
    }


def test_each_bad_slide_has_one_clear_error(tmp_path, good, capsys):
    for name, problem in bad_files(tmp_path, good).items():
        path = str(tmp_path / name)
        with pytest.raises(SlideError) as info:
            open_slide(path)
        message = str(info.value)
        assert message.startswith(path + ": ") and problem in message and "\n" not in message, message
        assert main(["slide-info", path]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and path in err and "Traceback" not in err, err


def test_truncated_slide_without_fast_path_fails_on_read(tmp_path, good):
    bad_files(tmp_path, good)
    path = str(tmp_path / "truncated.svs")
    with pytest.raises(SlideError) as info:
        with open_slide(path, backend="openslide") as slide:
            slide.read_region(0, 0, 0, *slide.dimensions)
    assert str(info.value).startswith(path + ": ")


def test_corrupt_tile_names_slide_and_place(tmp_path, good):
    data = bytearray(open(good, "rb").read())
    middle = len(data) // 3
    data[middle : middle + 4000] = bytes(4000)  # zeros over some tiles' JPEG data
    path = tmp_path / "corrupt.svs"
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:
        grid = tile_grid(slide)
        with pytest.raises(SlideError, match=r"corrupt.svs: cannot read level 0 at"):
            read_cells(slide, grid, np.argwhere(np.ones(grid.shape, bool)))


def test_no_mpp_refused_unless_overridden(tmp_path):
    path = write_slide(tmp_path / "nompp.tiff", TissuePainter(512, 512), None, downsamples=(1,))
    with pytest.raises(SlideError, match="nompp.tiff: no µm/px in the file; give this slide an mpp override"):
        open_slide(path)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5 and tile_grid(slide).shape == (4, 4)
