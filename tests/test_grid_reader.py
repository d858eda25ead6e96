"""The chunk-by-chunk embeddings reader against zarr's own slicing, on local and S3 stores."""

import itertools

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from nic_ray.dihedral import dihedral, inverse
from nic_ray.errors import StoreError
from nic_ray.store.grid_reader import GridReader
from nic_ray.store.store import CHUNK, EMBEDDINGS_CODEC, Store, StoreConfig, write_block
from nic_ray.train.crops import read_crop

SHAPE = (2, 5, 70, 45)  # O, C, H, W: edge chunks on both axes


def random_grid(seed: int = 0) -> np.ndarray:
    """Embeddings with two chunks of orientation 0 and one of orientation 1 left as background."""
    grid = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float16)
    grid[0, :, 0:32, 32:45] = 0
    grid[0, :, 64:70, 0:32] = 0
    grid[1, :, 32:64, 0:32] = 0
    return grid


def windows(rng: np.random.Generator, count: int = 25):
    """(orientation, y0, x0, h, w) inside the grid: single cells, chunk-straddling, edge, whole."""
    yield 0, 0, 0, SHAPE[2], SHAPE[3]
    yield 1, 31, 31, 2, 2
    yield 0, 69, 44, 1, 1
    for _ in range(count):
        y0, x0 = int(rng.integers(SHAPE[2])), int(rng.integers(SHAPE[3]))
        yield (
            int(rng.integers(2)),
            y0,
            x0,
            int(rng.integers(1, SHAPE[2] - y0 + 1)),
            int(rng.integers(1, SHAPE[3] - x0 + 1)),
        )


@pytest.fixture(scope="module", params=["local", "s3"])
def store_grid(request, tmp_path_factory, s3_endpoint):
    """A store written with the store API, chunk by chunk, background chunks never written."""
    root = tmp_path_factory.mktemp("reader")
    url = str(root / "s.zarr") if request.param == "local" else f"s3://slides/stores/reader-{id(root)}.zarr"
    encoder = {"name": "test", "sha256": "0" * 64, "code_size": SHAPE[1], "patch_size": 128, "mpp": 0.5}
    store = Store.create_or_open(url, StoreConfig(encoder, 128, SHAPE[0]))
    grid = random_grid()
    store.create_slide("s", {}, np.full(SHAPE[2:], 255, np.uint8), np.zeros((4, 4, 3), np.uint8))
    for y0, x0 in itertools.product(range(0, SHAPE[2], CHUNK), range(0, SHAPE[3], CHUNK)):
        block = grid[:, :, y0 : y0 + CHUNK, x0 : x0 + CHUNK]
        if block.any():
            write_block(url, "s", SHAPE, y0, x0, block)
    store.mark_complete("s")
    return Store.open(url), grid


def test_windows_equal_zarrs_slicing(store_grid):
    store, grid = store_grid
    array = store.embeddings("s")
    reader, _ = store.grid("s")
    assert reader._decode is not None  # the chunk-by-chunk path, not zarr's slicing
    assert array.nchunks_initialized < array.nchunks  # some chunks were never written
    rng = np.random.default_rng(1)
    for o, y0, x0, h, w in windows(rng):
        expected = array[o, :, y0 : y0 + h, x0 : x0 + w]
        np.testing.assert_array_equal(expected, grid[o, :, y0 : y0 + h, x0 : x0 + w])
        out = np.full((SHAPE[1], h, w), np.nan, np.float32)  # cast on the way, every cell written
        reader.read_into(out, o, y0, x0)
        np.testing.assert_array_equal(out, expected)
        # Into a turned view of a buffer (as crops are read): the buffer holds the turned window.
        turn = int(rng.integers(8))
        buffer = np.empty(dihedral(out, turn, dims=(1, 2)).shape, np.float16)
        reader.read_into(dihedral(buffer, inverse(turn), dims=(1, 2)), o, y0, x0)
        np.testing.assert_array_equal(buffer, dihedral(expected, turn, dims=(1, 2)))


@pytest.mark.parametrize("codec, fast", [(ZstdCodec(), True), (None, True), (GzipCodec(), False)])
def test_other_codecs_read_the_same(tmp_path, codec, fast):
    # zstd: stores written before lz4; none: uncompressed; gzip: not written by nic-ray, read by zarr.
    grid = random_grid(2)
    array = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=SHAPE,
        chunks=(1, SHAPE[1], CHUNK, CHUNK),
        dtype="float16",
        fill_value=0,
        compressors=codec,
    )
    array[:] = grid
    reader = GridReader(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"))
    assert (reader._decode is not None) == fast
    for o, y0, x0, h, w in windows(np.random.default_rng(3), 10):
        out = np.empty((SHAPE[1], h, w), np.float16)
        reader.read_into(out, o, y0, x0)
        np.testing.assert_array_equal(out, grid[o, :, y0 : y0 + h, x0 : x0 + w])


def test_crops_from_the_reader_equal_crops_of_the_array(store_grid):
    store, grid = store_grid
    reader, _ = store.grid("s")
    out = np.empty((SHAPE[1], 24, 24), np.float16)
    padded = np.pad(grid, ((0, 0), (0, 0), (64, 64), (64, 64)))  # background off the grid
    for o, turn, centre in itertools.product(range(2), range(8), [(0, 0), (35, 22), (69, 44), (20, 60), (-30, 5)]):
        y0, x0 = centre[0] - 12 + 64, centre[1] - 12 + 64
        # Independently: the padded grid sliced, turned by the orientation's element, then by turn.
        expected = dihedral(dihedral(padded[o, :, y0 : y0 + 24, x0 : x0 + 24], o, dims=(1, 2)), turn, dims=(1, 2))
        np.testing.assert_array_equal(read_crop(reader, o, centre, 24, np.float16, turn, out=out), expected)


def test_only_the_chunks_a_window_touches_are_read(tmp_path):
    grid = random_grid(4)
    zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=SHAPE,
        chunks=(1, SHAPE[1], CHUNK, CHUNK),
        dtype="float16",
        fill_value=0,
        compressors=EMBEDDINGS_CODEC,
    )[:] = grid
    files = {
        tuple(int(i) for i in p.relative_to(tmp_path / "a.zarr" / "c").parts): p
        for p in (tmp_path / "a.zarr" / "c").rglob("*")
        if p.is_file()
    }
    reader = GridReader(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"))
    # (y0, x0, h, w) → the (chunk row, chunk column) it covers, counted by hand on 32-cell chunks.
    cover = {
        (3, 3, 20, 20): {(0, 0)},
        (30, 30, 4, 4): {(0, 0), (0, 1), (1, 0), (1, 1)},
        (0, 10, 70, 5): {(0, 0), (1, 0), (2, 0)},
        (33, 0, 2, 45): {(1, 0), (1, 1)},
    }
    for (y0, x0, h, w), chunks in cover.items():
        touched = {(1, 0, cy, cx) for cy, cx in chunks}
        kept = {key: files[key].read_bytes() for key in files}
        for key in files.keys() - touched:  # any read of these fails to decode
            files[key].write_bytes(b"not a chunk")
        out = np.empty((SHAPE[1], h, w), np.float16)
        reader.read_into(out, 1, y0, x0)
        np.testing.assert_array_equal(out, grid[1, :, y0 : y0 + h, x0 : x0 + w])
        for key, data in kept.items():
            files[key].write_bytes(data)
    files[(1, 0, 1, 1)].write_bytes(b"not a chunk")
    with pytest.raises(StoreError, match=r"a.zarr: chunk \(1, 0, 1, 1\) is corrupt \(.*\); compress its slide again"):
        reader.read_into(np.empty((SHAPE[1], 4, 4), np.float16), 1, 30, 30)
