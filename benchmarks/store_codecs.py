"""The embeddings' codec, side by side in one run: bytes stored and training crops read per second.

  (ratio)   raw / compressed bytes of one chunk of NIC codes (a random NIC encoder on 1,024
            patches of the synthetic task's texture) and of the training benchmark's grids
  (decode)  GB/s of reading that chunk back through zarr (from memory)
  (loader)  crops/s of 2 CropLoader threads reading 400² crops from the training benchmark's
            store (`benchmarks/train.py`), rewritten with each codec; rounds alternate codecs,
            the medians are reported

Candidates: zstd (zarr's default), lz4 with byte shuffle (the store's), and none.

    ./dev bench store_codecs [--rounds 3] [--batches 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from train import bench_store
from zarr.codecs import ZstdCodec

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.synthetic_task import digit_patches
from nic_ray.encoders import create_encoder
from nic_ray.store.store import EMBEDDINGS_CODEC
from nic_ray.train.dataset import CropDataset, CropLoader, Draws

CODECS = {"zstd": ZstdCodec(), "lz4-shuffle": EMBEDDINGS_CODEC, "none": None}


def nic_chunk() -> np.ndarray:
    """(128, 32, 32) float16 codes of 32² digit patches by a random NIC encoder: one chunk."""
    patches, _ = digit_patches(32 * 32, seed=3)
    with torch.inference_mode():
        codes = create_encoder("nic", seed=0)(torch.from_numpy(patches)).numpy()
    return codes.reshape(32, 32, 128).transpose(2, 0, 1).astype(np.float16)


def rewrite(source: str, target: Path, codec) -> int:
    """``source`` store copied to ``target`` with its embeddings stored by ``codec``; their bytes."""
    stored = 0
    group = zarr.open_group(source, mode="r")
    copy = zarr.open_group(str(target), mode="w", attributes=dict(group.attrs))
    for slide_id, slide in group["slides"].groups():
        out = copy.create_group(f"slides/{slide_id}", attributes=dict(slide.attrs))
        for name, array in slide.arrays():
            compressors = codec if name == "embeddings" else array.compressors
            written = out.create_array(
                name,
                data=array[:],
                chunks=array.chunks,
                compressors=compressors,
                dimension_names=array.metadata.dimension_names,
            )
            stored += written.nbytes_stored() if name == "embeddings" else 0
    return stored


def loader_rate(url: str, batches: int) -> float:
    ids = [f"g{i}" for i in range(6)]
    loader = CropLoader(
        CropDataset(url, ids, {"y": np.arange(6) % 2}, 400),
        Draws(np.full(6, 1 / 6), 10**6, seed=0),
        batch_size=8,
        workers=2,
    )
    crops = iter(loader)
    for _ in range(3):  # read-ahead filled
        next(crops)
    start = time.perf_counter()
    for _ in range(batches):
        next(crops)
    return batches * 8 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    reuse_freed_memory()
    chunk = nic_chunk()
    raw = chunk.nbytes
    result: dict = {name: {} for name in CODECS}
    for name, codec in CODECS.items():
        array = zarr.create_array(
            zarr.storage.MemoryStore(), shape=chunk.shape, chunks=chunk.shape, dtype="float16", compressors=codec
        )
        array[:] = chunk
        start, repeats = time.perf_counter(), 50
        for _ in range(repeats):
            array[:]
        result[name]["nic_codes_ratio"] = round(raw / array.nbytes_stored(), 3)
        result[name]["decode_gb_per_s"] = round(repeats * raw / (time.perf_counter() - start) / 1e9, 2)
    source = bench_store(6, 480)
    rates: dict[str, list[float]] = {name: [] for name in CODECS}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for name, codec in CODECS.items():
            stores[name] = Path(tmp) / f"{name}.zarr"
            result[name]["bench_store_mb"] = round(rewrite(source, stores[name], codec) / 1e6, 1)
        for r in range(args.rounds):
            for name, path in stores.items():
                rates[name].append(loader_rate(str(path), args.batches))
            print(f"round {r + 1}:", {name: round(v[-1], 1) for name, v in rates.items()}, flush=True)
    for name in CODECS:
        result[name]["loader_crops_per_s"] = round(statistics.median(rates[name]), 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
