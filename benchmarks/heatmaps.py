"""Grad-CAM over whole grids against predict, and its memory as a slide grows.

Side by side in one run, on grids of NIC codes (C = 128) with the NIC CNN (400-cell crops,
width 128): slides per second of `grid_heatmap` (every crop of the grid in 8 views, forward and
backward) and of `predict_outputs` (10 crops × 8 views, forward only) on the same slides; then
the peak memory of a process making the heatmap of a grid and of one 4× its area (tiled into
crops, so it should stay flat).

    ./dev bench heatmaps [--size 400] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.explain.cam import Target, grid_heatmap
from nic_ray.store import CHUNK, Store, StoreConfig, write_block
from nic_ray.train import NICNet
from nic_ray.train.prediction import predict_outputs


def grid_of(size: int, seed: int) -> np.ndarray:
    """(128, size, size) float32 codes, tissue in a disc covering most of the grid."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    disc = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (0.45 * size) ** 2
    return (rng.normal(size=(128, size, size)) * disc).astype(np.float32)


def write_store(url: str, grids: dict[str, np.ndarray]) -> Store:
    encoder = {"name": "bench", "sha256": "0" * 64, "code_size": 128, "patch_size": 128, "mpp": 0.5}
    store = Store.create_or_open(url, StoreConfig(encoder, 128, 1))
    for slide_id, grid in grids.items():
        _, H, W = grid.shape
        tissue = (np.abs(grid).sum(0) > 0).astype(np.uint8) * 255
        store.create_slide(slide_id, {}, tissue, np.zeros((4, 4, 3), np.uint8))
        for y0 in range(0, H, CHUNK):
            for x0 in range(0, W, CHUNK):
                block = grid[None, :, y0 : y0 + CHUNK, x0 : x0 + CHUNK].astype(np.float16)
                write_block(url, slide_id, (1, 128, H, W), y0, x0, block)
        store.mark_complete(slide_id)
    return store


def peak_mb(url: str) -> float:
    """Peak RSS (MB) of a fresh process making the heatmap of the store's slide "s"."""
    reuse_freed_memory()
    torch.manual_seed(0)
    net = NICNet(128, {"y": 1}).eval()
    grid_heatmap([net], Store.open(url).embeddings("s"), Target("y", 0), crop_size=400)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over the exec from the forked parent.
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=400, help="grid side in cells (default: 400, one crop)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    reuse_freed_memory()
    torch.manual_seed(0)
    net = NICNet(128, {"y": 1}).eval()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(f"{tmp}/s.zarr", {f"s{i}": grid_of(args.size, i) for i in range(2)})
        rates: dict[str, list[float]] = {"heatmap": [], "predict": []}
        for _ in range(args.rounds):  # alternating, so that drift hits both alike
            for name in rates:
                start = time.perf_counter()
                for slide_id in store.complete_slides():
                    if name == "heatmap":
                        grid_heatmap([net], store.embeddings(slide_id), Target("y", 0), 400)
                    else:
                        predict_outputs(net, store, [slide_id], 400, crops=10, views=8)
                rates[name].append(len(store.complete_slides()) / (time.perf_counter() - start))
    heat, pred = np.median(rates["heatmap"]), np.median(rates["predict"])
    print(
        f"{args.size}² grids, {torch.get_num_threads()} torch threads: Grad-CAM {heat:.3f} slides/s, "
        f"predict {pred:.3f} slides/s (Grad-CAM / predict = {heat / pred:.2f})"
    )
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        urls = [f"{tmp}/{size}.zarr" for size in (args.size, 2 * args.size)]
        for url, size in zip(urls, (args.size, 2 * args.size)):
            write_store(url, {"s": grid_of(size, 0)})
        one, four = (pool.apply(peak_mb, (url,)) for url in urls)
    print(
        f"peak RSS making one heatmap: {one:.0f} MB at {args.size}², {four:.0f} MB at {2 * args.size}² "
        f"({four / one - 1:+.0%} for 4× the area)"
    )


if __name__ == "__main__":
    main()
