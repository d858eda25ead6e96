"""Synthetic slide writers open in OpenSlide with every level and µm/px; the NIC synthetic task."""

import numpy as np
import openslide
import pytest

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
