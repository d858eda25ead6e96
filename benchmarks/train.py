"""Training throughput, side by side in one run: crops read from the store versus from memory.

  (store)  the NIC CNN trained on crops that CropLoader threads read from a Zarr store
           (centre from the pmf, random orientation and dihedral transform, only touched chunks)
  (memory) the same CNN, same batches, on crops already in memory
  (loader) the loader alone: crops per second and CPU seconds per crop with nothing else running

Two layouts of the step, each in rounds alternating store/memory (medians reported):
  - the step on one thread, as `nic-ray train` runs it in a Ray Train worker of one CPU (Ray sets
    OMP_NUM_THREADS to a worker's CPUs), the loader threads on the other cores: what the loader
    sees on a GPU node, where the step does not use the CPU;
  - the step on every core, which the loader then shares.
A store round first trains through the batches read ahead (it times the loader's steady state);
a memory round starts once the loader has refilled its read-ahead and gone idle (it does not pay
for the store's reading). The store holds NIC-sized grids (C = 128 float16, written once with
the store API and cached). Goal: store ≥ 0.9 × memory (the loader is never the bottleneck).

    ./dev bench train [--crop 400] [--batch 8] [--steps 6] [--rounds 5] [--loader-workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time

import numpy as np
import torch

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.samples import data_dir
from nic_ray.store.store import CHUNK, Store, StoreConfig, write_block
from nic_ray.train.dataset import CropDataset, CropLoader, Draws
from nic_ray.train.losses import task_loss
from nic_ray.train.nic_cnn import NICNet

CODE = 128


def bench_store(slides: int, cells: int) -> str:
    """``slides`` grids of cells × cells, tissue in a disc, smooth random codes; cached."""
    path = data_dir() / "bench" / f"grids-{slides}x{cells}.zarr"
    encoder = {"name": "bench-random", "sha256": "0" * 64, "code_size": CODE, "patch_size": 128, "mpp": 0.5}
    store = Store.create_or_open(str(path), StoreConfig(encoder, 128, 1))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:cells, 0:cells]
    tissue = np.where((yy - cells / 2) ** 2 + (xx - cells / 2) ** 2 < (0.45 * cells) ** 2, 255, 0).astype(np.uint8)
    for i in range(slides):
        slide_id = f"g{i}"
        if store.slide_info_or_none(slide_id).get("status") == "complete":
            continue
        store.create_slide(slide_id, {"source": "random"}, tissue, np.zeros((8, 8, 3), np.uint8))
        shape = (1, CODE, cells, cells)
        for y0, x0 in itertools.product(range(0, cells, CHUNK), range(0, cells, CHUNK)):
            h, w = min(CHUNK, cells - y0), min(CHUNK, cells - x0)
            block = rng.standard_normal((1, CODE, h, w)).astype(np.float16)
            write_block(str(path), slide_id, shape, y0, x0, block * (tissue[y0 : y0 + h, x0 : x0 + w] > 0))
        store.mark_complete(slide_id)
    return str(path)


def train_steps(net, optimizer, batches, steps: int, untimed: int = 1) -> float:
    """Steps per second over ``steps`` steps, after ``untimed`` steps."""
    net.train()
    start = None
    for i, (crops, targets) in enumerate(itertools.islice(batches, steps + untimed)):
        loss = task_loss("binary", net(crops.float())["y"], targets["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i == untimed - 1:
            start = time.perf_counter()
    return steps / (time.perf_counter() - start)


def wait_until_idle(share: float = 0.05, every: float = 0.25) -> None:
    """Return once this process's threads use less than ``share`` of a core."""
    while True:
        cpu = time.process_time()
        time.sleep(every)
        if time.process_time() - cpu < share * every:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--cells", type=int, default=480)
    parser.add_argument("--crop", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loader-workers", type=int, default=2)
    args = parser.parse_args()
    reuse_freed_memory()
    url = bench_store(args.slides, args.cells)
    ids = [f"g{i}" for i in range(args.slides)]
    labels = {"y": np.arange(args.slides) % 2}
    data = CropDataset(url, ids, labels, args.crop)
    draws = Draws(np.full(args.slides, 1 / args.slides), count=10**6, seed=0)
    loader = CropLoader(data, draws, args.batch, args.loader_workers)
    batches = iter(loader)

    in_memory = [next(batches) for _ in range(args.steps + 1)]
    wait_until_idle()
    for _ in range(args.loader_workers + 1):  # what was read ahead
        next(batches)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(2 * args.steps):
        next(batches)
    loader_rate = 2 * args.steps * args.batch / (time.perf_counter() - start)
    loader_cpu = (time.process_time() - cpu) / (2 * args.steps * args.batch)

    result = {
        "crop": args.crop,
        "batch": args.batch,
        "code_size": CODE,
        "loader_threads": args.loader_workers,
        "loader_crops_per_s": round(loader_rate, 1),
        "loader_core_s_per_crop": round(loader_cpu, 3),
        "goal": ">= 0.9",
    }
    for threads in sorted({1, os.cpu_count()}):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = NICNet(CODE, {"y": 1})
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        rates = {"store": [], "memory": []}
        for r in range(args.rounds):
            rates["store"].append(train_steps(net, optimizer, batches, args.steps, untimed=args.loader_workers + 1))
            wait_until_idle()
            rates["memory"].append(train_steps(net, optimizer, iter(in_memory), args.steps))
            print(
                f"step on {threads} thread(s), round {r + 1}: store {rates['store'][-1]:.3f} steps/s, "
                f"memory {rates['memory'][-1]:.3f} steps/s",
                flush=True,
            )
        store, memory = statistics.median(rates["store"]), statistics.median(rates["memory"])
        step_cpu = threads / (memory * args.batch)
        layout = result[f"step_threads_{threads}"] = {
            "store_steps_per_s": round(store, 3),
            "memory_steps_per_s": round(memory, 3),
            "store_over_memory": round(store / memory, 3),
            "step_core_s_per_crop": round(step_cpu, 3),
        }
        if threads == os.cpu_count():
            # The step takes every core, so the loader's CPU comes out of the step's: the store
            # can at best reach step / (step + loader) of memory.
            layout["shared_core_bound"] = round(step_cpu / (step_cpu + loader_cpu), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
