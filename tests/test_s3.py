"""Slides on S3 (moto's server on loopback): downloaded into a bounded cache, read identically."""

import os

import numpy as np
import pytest

from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.errors import SlideError
from nic_ray.slides import SlideCache, open_slide


@pytest.fixture
def uploaded(tmp_path, s3_endpoint):
    paths = []
    for i in range(3):
        path = write_slide(
            tmp_path / f"case-{i}.svs", TissuePainter(1024, 1024, seed=i), 0.5, format="svs", downsamples=(1, 4)
        )
        s3_endpoint.upload_file(path, "slides", f"archive/case-{i}.svs")
        paths.append(path)
    return paths


def test_s3_slide_reads_like_the_local_file(tmp_path, uploaded):
    cache = SlideCache(tmp_path / "cache", max_bytes=10 * 2**20)
    with open_slide("s3://slides/archive/case-0.svs", cache=cache) as remote, open_slide(uploaded[0]) as local:
        assert remote.identity["size"] == local.identity["size"] and remote.identity["etag"]
        assert remote.fast_levels == (0, 1)
        for level in (0, 1):
            w, h = remote.levels[level].width, remote.levels[level].height
            assert np.array_equal(remote.read_region(level, 0, 0, w, h), local.read_region(level, 0, 0, w, h))


def test_cache_stays_bounded_and_keeps_slides_in_use(tmp_path, uploaded):
    total = sum(os.path.getsize(p) for p in uploaded)
    cache = SlideCache(tmp_path / "cache", max_bytes=total - 1)  # not room for all three

    def cached_files():
        return sorted(p.name for p in (tmp_path / "cache").rglob("*.svs"))

    held = open_slide("s3://slides/archive/case-0.svs", cache=cache)
    open_slide("s3://slides/archive/case-1.svs", cache=cache).close()
    open_slide("s3://slides/archive/case-2.svs", cache=cache).close()
    # case-1 (least recently used, not in use) went; case-0 is open, so it stayed.
    assert cached_files() == ["case-0.svs", "case-2.svs"]
    assert held.read_region(0, 0, 0, 64, 64).shape == (64, 64, 3)
    held.close()
    cache.clear()
    assert cached_files() == []


def test_missing_object_and_oversized_slide(tmp_path, uploaded):
    with pytest.raises(SlideError, match=r"s3://slides/archive/nope.svs: no such object"):
        open_slide("s3://slides/archive/nope.svs", cache=SlideCache(tmp_path / "c1"))
    with pytest.raises(SlideError, match="will not fit the slide cache"):
        open_slide("s3://slides/archive/case-0.svs", cache=SlideCache(tmp_path / "c2", max_bytes=1000))
