"""Synthetic slide writers open in OpenSlide with every level and µm/px; the NIC synthetic task."""

import numpy as np
import openslide
import pytest
from PIL import Image

from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.datasets.synthetic_task import nic_synthetic_case


@pytest.mark.parametrize("fmt,vendor", [("tiff", "generic-tiff"), ("svs", "aperio")])
def test_writers_open_in_openslide(tmp_path, fmt, vendor):
    path = write_slide(
        tmp_path / f"s.{fmt}", TissuePainter(4096, 2048, seed=1), 0.25, format=fmt, downsamples=(1, 4, 16)
    )
    assert openslide.OpenSlide.detect_format(path) == vendor
    with openslide.OpenSlide(path) as osr:
        assert osr.level_dimensions == ((4096, 2048), (1024, 512), (256, 128))
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.25)


def test_tissue_painter_covers_the_asked_fraction():
    painter = TissuePainter(8192, 8192, tissue=0.4, seed=3)
    thumb = painter(0, 0, 512, 512, 16)
    is_tissue = thumb.min(axis=-1) < 230
    assert 0.3 < is_tissue.mean() < 0.5


def test_nic_synthetic_case():
    case = nic_synthetic_case(size=(1024, 1536), n_digits=100, rect_size=(256, 160), digit_px=32, seed=7)
    assert case.image.shape == (1024, 1536, 3) and case.mask.shape == (1024, 1536)
    assert case.label != case.distractor and 0 <= case.label < 10
    assert case.mask.sum() == pytest.approx(256 * 160, rel=0.03)  # the tilted rectangle's area
    # The lesion is tilted: its rows are not one constant span (an upright box's would be).
    rows = np.flatnonzero(case.mask.any(axis=1))
    widths = case.mask[rows].sum(axis=1)
    assert widths.max() - widths.min() > 100
    # Dense digits inside the lesion; the same seed gives the same case.
    assert (case.image[case.mask].min(axis=-1) < 200).mean() > 0.1
    again = nic_synthetic_case(size=(1024, 1536), n_digits=100, rect_size=(256, 160), digit_px=32, seed=7)
    assert np.array_equal(again.image, case.image) and again.label == case.label


def test_paper_task_digits_everywhere_at_one_density_and_classes_by_place(tmp_path):
    """§4.1.1: one density of digits inside and outside the rectangles; inside, the rectangle's
    class; outside, any of the 10 classes; the tilted rectangle's class is the label, its area the
    mask; rectangles of the drawn sizes and orientations. The slide as written reads back, tile by
    tile, as the image painted whole (OpenSlide, lossless tiles)."""
    from nic_ray.datasets.synthetic_task import PaperCase

    cases = [PaperCase(size=1200, seed=s, long_side=(0.1, 0.5)) for s in range(6)]
    inside, outside, area_in, area_out = 0, 0, 0.0, 0.0
    for case in cases:
        y, x = case.centres.T
        tilted, upright = case.tilted.contains(y, x), case.upright.contains(y, x)
        assert (case.classes[tilted] == case.label).all() and (case.classes[upright & ~tilted] == case.distractor).all()
        assert set(case.classes[~tilted & ~upright].tolist()) == set(range(10))
        assert case.tilted.angle in (45, 135) and case.upright.angle in (0, 90) and case.label != case.distractor
        for r in (case.tilted, case.upright):
            assert 0.1 * 1200 <= r.long <= 0.5 * 1200 and r.long / 3 - 1e-9 <= r.short <= r.long / 2 + 1e-9
        mask = case.mask()
        assert mask.sum() == pytest.approx(case.tilted.long * case.tilted.short, rel=0.03)
        inside += (tilted | upright).sum()
        area_in += case.tilted.long * case.tilted.short + case.upright.long * case.upright.short
        outside += (~tilted & ~upright).sum()
        area_out += 1200 * 1200 - case.tilted.long * case.tilted.short - case.upright.long * case.upright.short
    expected = 25_920 / 3600**2
    assert inside / area_in == pytest.approx(expected, rel=0.1) and outside / area_out == pytest.approx(
        expected, rel=0.05
    )

    case = cases[0]
    path = write_slide(tmp_path / "p.tiff", case, 0.5, compression="zlib", tile=256, downsamples=(1, 4))
    with openslide.OpenSlide(path) as osr:
        level0 = np.asarray(osr.read_region((0, 0), 0, (1200, 1200)).convert("RGB"))
        level1 = np.asarray(osr.read_region((0, 0), 1, (300, 300)).convert("RGB"))
    image = case.image()
    np.testing.assert_array_equal(level0, image)
    box = image.reshape(300, 4, 300, 4, 3).mean(axis=(1, 3))
    assert np.abs(level1.astype(float) - box).max() <= 1  # the reduced level: box means, rounded


def test_synthetic_set_roles_balanced_and_resumable(tmp_path, capsys):
    import csv

    from nic_ray.cli import main

    out = tmp_path / "set"
    argv = ["synthetic", "--out", str(out), "--images", "24", "--size", "360", "--encoder-share", "0.25"]
    assert main(argv) == 0
    assert "6 encoder, 4 train, 2 val, 12 test images" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "labels.csv")))
    encoders = list(csv.DictReader(open(out / "encoders.csv")))
    assert (
        len(rows) == 18 and len(encoders) == 6 and not {r["slide_id"] for r in rows} & {e["slide_id"] for e in encoders}
    )
    for role in ("train", "val", "test"):
        labels = [int(r["label"]) for r in rows if r["split"] == role]
        assert max(np.bincount(labels, minlength=min(10, len(labels)))) - min(np.bincount(labels)[: len(labels)]) <= 1
    for row in rows[:3]:
        mask = np.asarray(Image.open(out / "masks" / f"{row['slide_id']}.png"))
        assert mask.shape == (360, 360) and mask.mean() == pytest.approx(float(row["lesion_share"]), abs=1e-4)
    with openslide.OpenSlide(encoders[0]["url"]) as osr:
        assert osr.dimensions == (360, 360) and float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    # The oracle's patch table: cells of the encoder images holding a digit's centre, its class.
    from nic_ray.datasets.synthetic_task import PaperCase
    from nic_ray.encoder_training.patches import load_patch_set

    digits = list(csv.DictReader(open(out / "digits.csv")))
    assert {d["url"] for d in digits} == {e["url"] for e in encoders}
    index = int(encoders[0]["slide_id"].split("-")[1])
    case = PaperCase(360, 9, long_side=(0.01, 0.5), seed=index, label=0)  # as the writer drew it (label aside)
    cells = {(int(y) // 9 * 9, int(x) // 9 * 9): c for (y, x), c in zip(case.centres, case.classes)}
    first = [d for d in digits if d["url"] == encoders[0]["url"]]
    assert all(cells.get((int(d["y"]), int(d["x"]))) is not None for d in first)
    truth = np.asarray(Image.open(out / "cells" / f"{encoders[0]['slide_id']}.png"))
    held: dict[tuple, set] = {}  # the classes of the digits centred in each cell
    for (y, x), c in zip(case.centres.astype(int) // 9, case.classes):
        held.setdefault((y, x), set()).add(int(c) + 1)
    assert truth.shape == (40, 40) and set(zip(*truth.nonzero())) == set(held)
    assert all(truth[cell] in classes for cell, classes in held.items())
    patches = load_patch_set(out / "digits.csv", mpp=0.5, patch_size=9)
    assert len(patches.labels) == len(digits) and (patches.patches.min(axis=(1, 2, 3)) < 200).mean() > 0.9
    written = {p: p.stat().st_mtime_ns for p in (out / "slides").iterdir()}
    assert main(argv) == 0  # again: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in (out / "slides").iterdir()} == written
    assert main([*argv, "--long-side-min", "0.6", "--long-side-max", "0.5"]) == 2
