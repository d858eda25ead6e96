"""Compression end to end on a local Ray: embeddings against the encoder run directly on
OpenSlide's pixels, orientations, placement, plain-zarr readability, bad slides, re-runs."""

import json
import os
import subprocess
import sys

import numpy as np
import openslide
import pyarrow.parquet as pq
import pytest
import tifffile
import torch
import zarr

from nic_ray.cli import main
from nic_ray.compress import compress
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.encoders import load_encoder
from nic_ray.errors import NicError
from nic_ray.store import Store, StoreError
from tests.conftest import assert_no_credentials, cell_colours, open_page, openslide_rgb, table_rows

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Three slides: an SVS at 0.25 µm/px with a 0.5 level, a generic TIFF at 0.5, and a slide
    whose 128-px cells have distinct colours (partly cut at the right and bottom edges)."""
    d = tmp_path_factory.mktemp("archive")
    write_slide(d / "tissue-a.svs", TissuePainter(2560, 2048, seed=1), 0.25, format="svs", downsamples=(1, 2, 8))
    write_slide(d / "tissue-b.tiff", TissuePainter(1500, 1300, seed=2), 0.5, downsamples=(1, 4))
    colours = cell_colours(5, 4)
    image = np.kron(colours, np.ones((128, 128, 1), np.uint8))[: 5 * 128 - 40, : 4 * 128 - 20]
    write_slide(d / "colours.tiff", image, 0.5, compression="zlib", downsamples=(1,))
    return d


LEVEL = {"tissue-a": 1, "tissue-b": 0, "colours": 0}  # the level serving 0.5 µm/px, by hand


def reference_codes(encoder, path, level, cells, orientation=0):
    """The encoder run directly on OpenSlide's patches, transformed by D4 element o in numpy."""
    patches = np.stack([openslide_rgb(path, level, x * 128, y * 128, 128, 128) for y, x in cells])
    flip, turns = divmod(orientation, 4)
    if flip:
        patches = patches[:, :, ::-1]
    patches = np.rot90(patches, turns, axes=(1, 2)).copy()
    with torch.inference_mode():
        return encoder(torch.from_numpy(patches)).numpy()


@pytest.mark.parametrize("name", ["mean-rgb", "nic"])
def test_embeddings_equal_the_encoder_on_openslide_patches(archive, tmp_path, name):
    result = compress([str(archive)], str(tmp_path / "store.zarr"), encoder=name, progress=False)
    assert result.ok and result.counts() == {"complete": 3}
    store = Store.open(tmp_path / "store.zarr")
    encoder = load_encoder(name)
    for slide_id, level in LEVEL.items():
        info = store.slide_info(slide_id)
        assert info["level"] == level and info["status"] == "complete"
        with openslide.OpenSlide(str(next(archive.glob(f"{slide_id}.*")))) as osr:  # where cells lie on level 0
            level0 = info["level0"]
            assert level0["size"] == [osr.dimensions[1], osr.dimensions[0]]
            assert level0["downsample"] == pytest.approx(osr.level_downsamples[level])
            assert level0["mpp"] == pytest.approx(float(osr.properties[openslide.PROPERTY_NAME_MPP_X]))
        grid = store.read_embeddings(slide_id, orientation=0).astype(np.float32)
        tissue = store.read_tissue(slide_id)
        cells = np.argwhere(tissue >= 26)
        assert len(cells) == info["n_tissue_tiles"] > 0
        assert not grid[:, tissue < 26].any()  # background: 0, never encoded
        path = next(archive.glob(f"{slide_id}.*"))
        pick = cells[np.random.default_rng(0).permutation(len(cells))[:24]]
        got = grid[:, pick[:, 0], pick[:, 1]].T
        np.testing.assert_allclose(got, reference_codes(encoder, path, level, pick), rtol=2e-3, atol=2e-3)


def test_eight_orientations_and_cell_placement(archive, tmp_path):
    url = str(tmp_path / "o8.zarr")
    assert compress([str(archive / "colours.tiff")], url, encoder="nic", orientations=8, progress=False).ok
    assert compress([str(archive / "colours.tiff")], str(tmp_path / "rgb.zarr"), progress=False).ok
    store = Store.open(url)
    grid = store.read_embeddings("colours").astype(np.float32)
    assert grid.shape == (8, 128, 5, 4)
    lazy = store.to_xarray("colours")
    assert lazy["embeddings"].dims == ("o", "c", "y", "x")
    np.testing.assert_array_equal(lazy["embeddings"].values, store.read_embeddings("colours"))
    encoder = load_encoder("nic")
    cells = np.array([(0, 0), (2, 1), (4, 3)])  # (4, 3) is an edge cell, part white
    for o in range(8):
        ref = reference_codes(encoder, archive / "colours.tiff", 0, cells, orientation=o)
        np.testing.assert_allclose(grid[o][:, cells[:, 0], cells[:, 1]].T, ref, rtol=2e-3, atol=2e-3)
    # Cells of texture tell the orientations apart: each is the encoder on the turned patch.
    assert compress([str(archive / "tissue-b.tiff")], url, encoder="nic", orientations=8, progress=False).ok
    textured = Store.open(url).read_embeddings("tissue-b").astype(np.float32)
    cells = np.argwhere(Store.open(url).read_tissue("tissue-b") >= 26)[::7][:6]
    for o in range(8):
        ref = reference_codes(encoder, archive / "tissue-b.tiff", 0, cells, orientation=o)
        got = textured[o][:, cells[:, 0], cells[:, 1]].T
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)
        if o:
            # Not within the tolerance of the identity: at this tolerance the test tells o apart.
            assert not np.allclose(got, textured[0][:, cells[:, 0], cells[:, 1]].T, rtol=2e-3, atol=2e-3)
    # Placement: mean-rgb of every full cell is that cell's colour.
    means = Store.open(tmp_path / "rgb.zarr").read_embeddings("colours", 0).astype(np.float32)
    np.testing.assert_allclose(means[:, :4, :3].transpose(1, 2, 0), cell_colours(5, 4)[:4, :3] / 255, atol=1e-3)
    # Threshold 0: every cell of the grid is encoded, background too (a grid smaller than a chunk).
    everything = str(tmp_path / "all.zarr")
    assert compress([str(archive / "tissue-b.tiff")], everything, tissue_threshold=0.0, progress=False).ok
    codes = Store.open(everything).read_embeddings("tissue-b", 0).astype(np.float32)
    _, H, W = codes.shape
    corners = np.array([(0, 0), (H - 1, W - 1), (H // 2, 0)])
    ref = reference_codes(load_encoder("mean-rgb"), archive / "tissue-b.tiff", 0, corners)
    np.testing.assert_allclose(codes[:, corners[:, 0], corners[:, 1]].T, ref, atol=2e-3)


def test_store_opens_with_plain_zarr_and_xarray(archive, tmp_path):
    url = str(tmp_path / "plain.zarr")
    assert compress([str(archive / "colours.tiff")], url, progress=False).ok
    code = f"""
import sys, zarr, xarray
g = zarr.open_group({url!r}, mode="r")
assert g.attrs["nic"]["encoder"]["name"] == "mean-rgb" and g.attrs["nic"]["orientations"] == 1
s = g["slides/colours"]
assert s.attrs["slide"]["status"] == "complete"
e = s["embeddings"]
assert e.shape == (1, 3, 5, 4) and str(e.dtype) == "float16" and e.metadata.dimension_names == ("o", "c", "y", "x")
assert e.chunks[:2] == (1, 3) and 32 <= e.chunks[2] <= 128
ds = xarray.open_zarr({url!r}, group="slides/colours", consolidated=False)
assert ds["embeddings"].dims == ("o", "c", "y", "x") and ds["tissue"].shape == (5, 4)
assert "nic_ray" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_bad_slides_fail_alone_and_the_store_report_says_why(archive, tmp_path, capsys, browser):
    data = (archive / "tissue-b.tiff").read_bytes()
    bad = tmp_path / "mixed"
    bad.mkdir()
    for name in ("tissue-a.svs", "colours.tiff"):
        (bad / name).write_bytes((archive / name).read_bytes())
    (bad / "truncated.tiff").write_bytes(data[: len(data) // 2])
    (bad / "empty.svs").write_bytes(b"")
    (bad / "notes.svs").write_text("not a slide\n" * 50)
    corrupt = bytearray(data)
    level0 = tifffile.TiffFile(archive / "tissue-b.tiff").pages[0]
    for offset, count in zip(level0.dataoffsets, level0.databytecounts):
        corrupt[offset + count - 64 : offset + count] = bytes(64)  # lost tails: decoders fill them silently
    (bad / "corrupt.tiff").write_bytes(bytes(corrupt))
    url = str(tmp_path / "mixed.zarr")
    assert main(["compress", str(bad), "--store", url]) == 1
    out = capsys.readouterr().out
    store = Store.open(url)
    assert store.complete_slides() == ["colours", "tissue-a"]
    runs = [p for p in os.listdir(tmp_path / "mixed.zarr" / "runs") if p[0].isdigit()]
    report = pq.read_table(tmp_path / "mixed.zarr" / "runs" / runs[0] / "report.parquet").to_pylist()
    reasons = {r["slide_id"]: r["reason"] for r in report if r["status"] == "failed"}
    assert set(reasons) == {"truncated", "empty", "notes", "corrupt"}
    assert "truncated" in reasons["truncated"] and "empty file" in reasons["empty"]
    assert "not a slide format" in reasons["notes"] and "cannot read level 0" in reasons["corrupt"]
    assert all(r.startswith(str(bad)) for r in reasons.values())  # each names its file
    assert "4 failed" in out and "failed: corrupt:" in out
    # The store's report: its run, what failed and why, as report.parquet says; thumbnails shown.
    assert main(["report", "--store", url]) == 0
    assert f"report: {url}/report.html" in capsys.readouterr().out
    page = open_page(browser, tmp_path / "mixed.zarr" / "report.html", tmp_path / "store-report.png")
    _, run = table_rows(page, "runs")
    assert run[0] == runs[0] and run[2:6] == ["6", "2", "0", "4"] and int(run[6]) == sum(r["tiles"] for r in report)
    _, *failed = table_rows(page, "failed")
    assert {row[0]: row[2] for row in failed} == reasons and {row[1] for row in failed} == {runs[0]}
    # The good slides are right despite their neighbours.
    encoder = load_encoder("mean-rgb")
    grid = store.read_embeddings("colours", 0).astype(np.float32)
    np.testing.assert_allclose(grid[:, 1, 2], reference_codes(encoder, bad / "colours.tiff", 0, [(1, 2)])[0], atol=1e-3)


def test_rerun_skips_complete_overwrite_redoes_changed_source_redone(archive, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for p in archive.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    url = str(tmp_path / "s.zarr")
    first = compress([str(src)], url, progress=False)
    runs = {s: Store.open(url).slide_info(s)["run_id"] for s in LEVEL}
    assert set(runs.values()) == {first.run_id}

    again = compress([str(src)], url, progress=False)
    assert again.ok and again.counts() == {"skipped": 3} and "3 skipped" in again.report
    assert {s: Store.open(url).slide_info(s)["run_id"] for s in LEVEL} == runs  # nothing rewritten

    before = Store.open(url).read_embeddings("tissue-b")
    write_slide(src / "tissue-b.tiff", TissuePainter(1500, 1300, seed=9), 0.5, downsamples=(1, 4))
    changed = compress([str(src)], url, progress=False)
    assert changed.counts() == {"skipped": 2, "complete": 1}
    store = Store.open(url)
    assert store.slide_info("tissue-b")["run_id"] == changed.run_id
    assert not np.array_equal(store.read_embeddings("tissue-b"), before)

    redo = compress([str(src)], url, overwrite=True, progress=False)
    assert redo.counts() == {"complete": 3}
    assert {Store.open(url).slide_info(s)["run_id"] for s in LEVEL} == {redo.run_id}


def test_store_of_another_encoder_is_refused(archive, tmp_path, capsys):
    url = str(tmp_path / "rgb.zarr")
    assert compress([str(archive / "colours.tiff")], url, progress=False).ok
    with pytest.raises(StoreError, match="built with encoder mean-rgb .* not encoder nic"):
        compress([str(archive / "colours.tiff")], url, encoder="nic", progress=False)
    assert main(["compress", str(archive / "colours.tiff"), "--store", url, "--orientations", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 orientation(s), not" in err
    assert Store.open(url).complete_slides() == ["colours"]  # nothing lost
    (tmp_path / "other.zarr").mkdir()
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_group("something")
    with pytest.raises(StoreError, match="not a nic-ray store"):
        compress([str(archive / "colours.tiff")], str(tmp_path / "other.zarr"), progress=False)


def test_status_command(archive, tmp_path, capsys):
    url = str(tmp_path / "st.zarr")
    assert main(["compress", str(archive / "colours.tiff"), str(archive / "tissue-b.tiff"), "--store", url]) == 0
    capsys.readouterr()
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "colours" in out and "5×4" in out and "2 of 2 slides complete" in out
    # Its runs: one line each, with what report.parquet and run.json of each run say.
    (run,) = [p.parent.name for p in (tmp_path / "st.zarr" / "runs").glob("*/report.parquet")]
    rows = pq.read_table(tmp_path / "st.zarr" / "runs" / run / "report.parquet").to_pylist()
    times = json.loads((tmp_path / "st.zarr" / "runs" / run / "run.json").read_text())
    (line,) = [line for line in out.splitlines() if line.startswith(run)]
    tiles = sum(r["tiles"] for r in rows)
    assert line.split()[3:8] == ["2", "0", "0", f"{tiles:,}", f"{tiles / times['seconds']:,.0f}"], line


def test_compress_from_s3_into_s3(archive, tmp_path, s3_endpoint):
    for name in ("colours.tiff", "tissue-a.svs"):
        s3_endpoint.upload_file(str(archive / name), "slides", f"lab/{name}")
    url = "s3://slides/stores/lab.zarr"
    result = compress(["s3://slides/lab/"], url, progress=False)
    assert result.ok and result.counts() == {"complete": 2}
    store = Store.open(url)
    info = store.slide_info("tissue-a")
    assert info["source"] == "s3://slides/lab/tissue-a.svs" and info["identity"]["etag"]
    local = tmp_path / "local.zarr"
    assert compress([str(archive / "colours.tiff"), str(archive / "tissue-a.svs")], str(local), progress=False).ok
    for slide_id in ("colours", "tissue-a"):
        assert np.array_equal(store.read_embeddings(slide_id), Store.open(local).read_embeddings(slide_id))
    summary = s3_endpoint.get_object(Bucket="slides", Key=f"stores/lab.zarr/runs/{result.run_id}/summary.txt")
    assert b"2 complete" in summary["Body"].read()
    assert compress(["s3://slides/lab/"], url, progress=False).counts() == {"skipped": 2}
    # The store on S3 and its report hold no byte of the credentials the run had, nor do the logs
    # of the session's Ray (where Ray keeps them by default).
    assert main(["report", "--store", url]) == 0
    assert_no_credentials([url, "/tmp/ray/session_latest/logs"])


def test_encoders_the_cluster_cannot_hold_and_bad_options_are_refused(archive, tmp_path, capsys):
    """The session's Ray has 4 CPUs: 4 encoders of 1 CPU leave none to the planning tasks, which
    Ray Data would wait for for ever. Refused at once, before a store is made."""
    url, src = tmp_path / "s.zarr", str(archive / "colours.tiff")
    with pytest.raises(
        NicError,
        match=r"4 encoders × 1 CPU and 1 for planning slides: 5 CPU, but the Ray "
        r"cluster has at most 4; ask for fewer encoders or fewer CPUs each",
    ):
        compress([src], str(url), encoders=4, progress=False)
    assert main(["compress", src, "--store", str(url), "--encoders", "2", "--cpus-per-encoder", "2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(NicError, match="each encoder needs 1 GPU, but the Ray cluster has at most 0; ask for 0 GPUs"):
        compress([src], str(url), gpus_per_encoder=1, progress=False)
    for option, value, says in (
        ("--encoders", "0", "--encoders must be at least 1, not 0"),
        ("--batch-size", "-5", "--batch-size must be at least 1, not -5"),
        ("--gpus-per-encoder", "-1", "--gpus-per-encoder must be at least 0, not -1"),
        ("--tissue-threshold", "10", "--tissue-threshold is a fraction of a cell, from 0 to 1, not 10"),
    ):
        assert main(["compress", src, "--store", str(url), option, value]) == 2
        assert capsys.readouterr().err == f"nic-ray: error: {says}\n"
    assert not url.exists()
    # 3 encoders and the planning fit the 4 CPUs, and the slide comes out as with one encoder.
    one = compress([src], str(tmp_path / "one.zarr"), encoders=1, progress=False)
    three = compress([src], str(url), encoders=3, progress=False)
    assert one.ok and three.ok
    np.testing.assert_array_equal(
        Store.open(str(url)).read_embeddings("colours"),
        Store.open(str(tmp_path / "one.zarr")).read_embeddings("colours"),
    )


def multi_chunk_image(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A (rows × cols)-cell image of 128-px flat cells, each its own saturated colour but one in
    seven (diagonals), which are white glass; (colours, image)."""
    y, x = np.mgrid[0:rows, 0:cols]
    colours = np.stack([60 + 4 * y, 60 + 4 * x, 20 + (y * x) % 30], axis=-1).astype(np.uint8)
    colours[(y + x) % 7 == 0] = 255
    return colours, np.kron(colours, np.ones((128, 128, 1), np.uint8))


def test_slide_of_several_blocks_complete_only_when_every_block_is_written(tmp_path):
    """A 40 × 36-cell slide is four 32 × 32 chunks, each a block of its own. Every tissue cell
    holds the mean colour of its cell, as painted (lossless tiles), in every block. A copy whose
    lower-right block holds a corrupt tile fails, whatever the other three blocks did, and is not
    complete; its neighbour in the same run is."""
    colours, image = multi_chunk_image(40, 36)
    src = tmp_path / "src"
    src.mkdir()
    write_slide(src / "big.tiff", image, 0.5, compression="zlib", downsamples=(1, 8))
    data = bytearray((src / "big.tiff").read_bytes())
    page = tifffile.TiffFile(src / "big.tiff").pages[0]
    across = -(-page.imagewidth // page.tilewidth)
    tile = (4200 // page.tilelength) * across + 4300 // page.tilewidth  # cell (32, 33): the last block
    offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    data[offset : offset + count] = bytes(count)  # not a zlib stream any more
    (src / "broken.tiff").write_bytes(bytes(data))

    url = str(tmp_path / "big.zarr")
    result = compress([str(src)], url, encoders=1, progress=False)
    rows = {r["slide_id"]: r for r in result.rows}
    assert rows["big"]["status"] == "complete" and rows["broken"]["status"] == "failed"
    assert "tile" in rows["broken"]["reason"] and str(src / "broken.tiff") in rows["broken"]["reason"]
    store = Store.open(url)
    assert store.complete_slides() == ["big"] and store.slide_info("broken")["status"] != "complete"
    info = store.slide_info("big")
    assert info["grid"] == [40, 36] and info["n_blocks"] == 4
    grid = store.read_embeddings("big", 0).astype(np.float32).transpose(1, 2, 0)  # (H, W, 3)
    tissue = store.read_tissue("big") >= 26
    np.testing.assert_array_equal(tissue, (colours != 255).any(axis=-1))  # glass is background
    np.testing.assert_allclose(grid[tissue], colours[tissue] / 255, atol=1e-3)
    assert not grid[~tissue].any()
