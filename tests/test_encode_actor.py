"""The encoder actor on its own, as Ray Data drives it: two calls at once, one reading its block
while the other encodes (what keeps a GPU from waiting for slides)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr

import nic_ray.compress.encode as encode_module
from nic_ray.compress.encode import CONCURRENT_CALLS, EncodeBlocks
from nic_ray.compress.stages import Settings, plan_slide
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.encoders import encoder_identity, load_encoder
from nic_ray.store.store import Store, StoreConfig
from tests.conftest import openslide_rgb


def planned_blocks(slide: str, store: str) -> tuple[Settings, list[dict]]:
    """A store as `compress` makes it, and the slide's blocks as Ray Data hands them to actors."""
    enc = load_encoder("mean-rgb")
    Store.create_or_open(store, StoreConfig(encoder_identity("mean-rgb", enc), enc.patch_size, 1))
    settings = Settings(store, enc.mpp, enc.patch_size, enc.patch_size, 1, enc.code_size, 26)
    rows = plan_slide({"slide_id": "wide", "url": slide, "mpp": np.nan}, settings)
    return settings, [{k: np.array([v]) for k, v in row.items()} for row in rows]


def test_an_actor_reads_a_block_while_it_encodes_another_and_writes_what_one_call_at_a_time_writes(
    tmp_path, monkeypatch
):
    slide = tmp_path / "wide.tiff"
    write_slide(slide, TissuePainter(8192, 1024, tissue=0.8, seed=3), 0.5, downsamples=(1,))
    settings, blocks = planned_blocks(str(slide), str(tmp_path / "one-at-a-time.zarr"))
    assert len(blocks) == CONCURRENT_CALLS == 2  # 64 × 8 cells: two chunks, both with tissue
    actor = EncodeBlocks("mean-rgb", {}, settings, batch_size=64, use_gpu=False)
    for block in blocks:
        assert actor(block)["error"][0] == ""

    together_url = str(tmp_path / "together.zarr")
    settings, blocks = planned_blocks(str(slide), together_url)
    actor = EncodeBlocks("mean-rgb", {}, settings, batch_size=64, use_gpu=False)
    changed = threading.Condition()
    running, most, done = (dict.fromkeys(("read", "encode"), 0) for _ in range(3))

    def counted(stage, fn):
        def wrapper(*args, **kwargs):
            with changed:
                running[stage] += 1
                most[stage] = max(most[stage], running[stage])
            try:
                return fn(*args, **kwargs)
            finally:
                with changed:
                    running[stage] -= 1
                    done[stage] += 1
                    changed.notify_all()

        return wrapper

    encode = counted("encode", actor.encode)

    def encode_once_both_are_read(tiles):
        # The first encoding waits until the other block is read: it can only be read meanwhile.
        with changed:
            assert changed.wait_for(lambda: done["read"] == 2, timeout=60), "no block was read during an encoding"
        return encode(tiles)

    monkeypatch.setattr(encode_module, "read_tiles", counted("read", encode_module.read_tiles))
    actor.encode = encode_once_both_are_read
    with ThreadPoolExecutor(CONCURRENT_CALLS) as calls:
        results = list(calls.map(actor, blocks))
    assert [r["error"][0] for r in results] == ["", ""]
    assert most == {"read": 1, "encode": 1}  # one read and one encoding at a time, never two
    one_at_a_time = zarr.open_array(str(tmp_path / "one-at-a-time.zarr"), path="slides/wide/embeddings")[:]
    assert one_at_a_time[..., :32].any() and one_at_a_time[..., 32:].any()
    # Independently: each tissue cell holds the mean colour of OpenSlide's pixels of that cell.
    tissue = zarr.open_array(str(tmp_path / "one-at-a-time.zarr"), path="slides/wide/tissue")[:] >= 26
    cells = np.argwhere(tissue)
    expected = [openslide_rgb(slide, 0, x * 128, y * 128, 128, 128).mean(axis=(0, 1)) / 255 for y, x in cells]
    np.testing.assert_allclose(one_at_a_time[0][:, tissue].T, expected, atol=1e-3)
    assert not one_at_a_time[0][:, ~tissue].any()
    np.testing.assert_array_equal(zarr.open_array(together_url, path="slides/wide/embeddings")[:], one_at_a_time)
