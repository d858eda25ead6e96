"""Compression throughput, side by side in one run, for mean-rgb and the NIC encoder:

  (a) decoding alone: the tissue tiles of every slide, block by block, one thread a core
  (b) the encoder alone on tiles already in memory, one thread a core
      ((a) and (b) are taken before and after (c) and (d), and their mean is what (c) is held to)
  (c) `nic-ray compress` end to end, one encoder actor a core (Ray started beforehand,
      everything else timed: actor start-up, planning, reading, encoding, writing, the report);
      and [in brackets] its rate past start-up: (tiles of 4 slides − of 1) / (time of 4 − of 1)
  (d) a plain loop as CLAM-style tools work: OpenSlide read_region per patch, batched encoder

and the peak memory of a Ray worker compressing a slide, and one 4× larger. Each timed section
starts once the encoder actors of the run before have exited. Slides: ≥ 4 of
16k × 16k px at 0.5 µm/px, ~50% tissue. Goals on a 2-core machine: (c) ≥ 0.8 × min(a, b) for both
encoders; (c) ≥ 3 × (d) with mean-rgb; worker memory grows < 10% for 4× the slide area.

    ./dev bench compress [--size 16384] [--slides 4] [--encoders mean-rgb,nic]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import psutil
import ray
from _slides import tissue_slide

from nic_ray.compress import compress
from nic_ray.compress.encode import EncodeBlocks
from nic_ray.compress.stages import Settings
from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.encoders import load_encoder
from nic_ray.slides import open_slide, read_cells, tile_grid, tissue_fraction
from nic_ray.store.store import CHUNK, block_origins

CORES = os.cpu_count() or 1
THRESHOLD = 26  # 10% tissue, as compress does by default


def wait_for_actors_to_exit(timeout: float = 60) -> None:
    """Until the encoder actors of the run before have exited. They go after `compress` returns,
    each spending about a second of CPU on leaving Python (torch and Ray loaded): on 2 cores that
    would slow whatever is timed next, which no user's single run pays."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        "MapWorker" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    ):
        time.sleep(0.05)


def tissue_blocks(path: Path) -> list[np.ndarray]:
    """The tissue cells of a slide, one array per chunk-sized block, as compress plans them."""
    with open_slide(path) as slide:
        tissue = tissue_fraction(slide, tile_grid(slide))
    out = []
    for y0, x0 in block_origins(tissue, THRESHOLD):
        local = np.argwhere(tissue[y0 : y0 + CHUNK, x0 : x0 + CHUNK] >= THRESHOLD)
        out.append(local + [y0, x0])
    return out


def decode_rate(slides: list[Path], blocks: dict) -> float:
    wait_for_actors_to_exit()
    handles = {p: open_slide(p) for p in slides}
    grids = {p: tile_grid(s) for p, s in handles.items()}
    work = [(p, cells) for p in slides for cells in blocks[p]]
    start = time.perf_counter()
    with ThreadPoolExecutor(CORES) as pool:
        n = sum(len(t) for t in pool.map(lambda w: read_cells(handles[w[0]], grids[w[0]], w[1]), work))
    rate = n / (time.perf_counter() - start)
    for s in handles.values():
        s.close()
    return rate


def encoder(name: str) -> EncodeBlocks:
    """The encoder as the actors hold it, on every core."""
    enc = load_encoder(name)
    settings = Settings("", enc.mpp, enc.patch_size, enc.patch_size, 1, enc.code_size, THRESHOLD)
    return EncodeBlocks(name, {}, settings, batch_size=256, use_gpu=False, threads=CORES)


def encoder_rate(name: str, tiles: np.ndarray) -> float:
    enc = encoder(name)
    wait_for_actors_to_exit()
    enc.encode(tiles[:256])  # warm-up
    start = time.perf_counter()
    enc.encode(tiles)
    return len(tiles) / (time.perf_counter() - start)


def timed_compress(name: str, slides: list[Path]) -> float:
    wait_for_actors_to_exit()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = compress(
            [str(p) for p in slides],
            f"{tmp}/store.zarr",
            encoder=name,
            encoders=CORES,
            cpus_per_encoder=1,
            progress=False,
        )
        seconds = time.perf_counter() - start
    assert result.ok, result.report
    return seconds


def plain_loop_rate(name: str, slides: list[Path], blocks: dict, limit: int) -> float:
    """One process: read_region per patch (raster order), encoder every 256 patches."""
    enc = encoder(name)
    wait_for_actors_to_exit()
    n, start, batch = 0, time.perf_counter(), []
    for path in slides:
        with openslide.OpenSlide(str(path)) as osr:
            for cells in blocks[path]:
                for y, x in cells:
                    batch.append(
                        np.asarray(osr.read_region((int(x) * 128, int(y) * 128), 0, (128, 128)).convert("RGB"))
                    )
                    if len(batch) == 256:
                        enc.encode(np.stack(batch))
                        n, batch = n + 256, []
                    if n >= limit:
                        return n / (time.perf_counter() - start)
    if batch:
        enc.encode(np.stack(batch))
        n += len(batch)
    return n / (time.perf_counter() - start)


class WorkerMemory:
    """Peak RSS of each Ray worker process (sampled), by its title: ray::<what it runs>."""

    def __init__(self):
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.05):
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                title = " ".join(p.info["cmdline"] or [])
                if title.startswith("ray::") and p.info["memory_info"]:
                    rss = p.info["memory_info"].rss
                    if rss > self.peak.get(p.pid, ("", 0))[1]:
                        self.peak[p.pid] = (title.split()[0], rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def max_mb(self) -> float:
        return max((rss for _, rss in self.peak.values()), default=0) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description="compression throughput and memory")
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--encoders", default="mean-rgb,nic")
    parser.add_argument("--plain-limit", type=int, default=6000, help="patches the plain loop reads (it is slow)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    reuse_freed_memory()  # as the encoder actors that read tiles do

    slides = [tissue_slide(args.size, seed) for seed in range(args.slides)]
    big = tissue_slide(args.size * 2, seed=100)
    blocks = {p: tissue_blocks(p) for p in slides}
    n_tiles = sum(len(c) for b in blocks.values() for c in b)
    print(
        f"{len(slides)} slides of {args.size}² px at 0.5 µm/px: {n_tiles:,} tissue tiles "
        f"({n_tiles / (len(slides) * (args.size // 128) ** 2):.0%} of cells); {CORES} cores",
        flush=True,
    )
    with open_slide(slides[0]) as s:
        sample = read_cells(s, tile_grid(s), np.concatenate(blocks[slides[0]])[:4096])

    # One logical CPU more than cores, for the planning tasks; an encoder actor a core.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=CORES + 1, include_dashboard=False, logging_level="ERROR")
    results = {"tiles": n_tiles, "cores": CORES}
    first = sum(len(c) for c in blocks[slides[0]])
    timed_compress("mean-rgb", slides[:1])  # warm-up: the process's first run pays one-time costs
    for name in args.encoders.split(","):
        # (a) and (b) just before and just after (c) and (d): this shared machine's speed drifts
        # by a third within minutes, so each term of a ratio is taken around the other.
        before = decode_rate(slides, blocks), encoder_rate(name, sample)
        t1 = timed_compress(name, slides[:1])
        t_all = timed_compress(name, slides)
        d = plain_loop_rate(name, slides, blocks, args.plain_limit)
        after = decode_rate(slides, blocks), encoder_rate(name, sample)
        a, b = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        c = n_tiles / t_all
        # The rate past start-up (actors loading torch, the first plans): what an archive of
        # thousands of slides sees.
        steady = (n_tiles - first) / (t_all - t1)
        results[name] = {
            "a_decode": [before[0], after[0]],
            "b_encoder": [before[1], after[1]],
            "c_compress": c,
            "c_steady": steady,
            "start_up_s": t1 - first / steady,
            "d_plain": d,
            "c_over_min_ab": c / min(a, b),
            "steady_over_min_ab": steady / min(a, b),
            "c_over_d": c / d,
        }
        print(
            f"{name:9} (a) decode {before[0]:,.0f}→{after[0]:,.0f}/s  (b) encoder {before[1]:,.0f}→{after[1]:,.0f}/s  "
            f"(c) compress {c:,.0f}/s [{steady:,.0f}/s past {t1 - first / steady:.1f} s of start-up]  "
            f"(d) plain loop {d:,.0f}/s  c/min(a,b) {c / min(a, b):.2f} [{steady / min(a, b):.2f}]  "
            f"c/d {c / d:.1f} [{steady / d:.1f}]",
            flush=True,
        )

    memory = {}
    for label, path in (("1x", slides[0]), ("4x", big)):
        wait_for_actors_to_exit()  # else a worker of the run before could be the peak
        with tempfile.TemporaryDirectory() as tmp, WorkerMemory() as mem:
            assert compress([str(path)], f"{tmp}/m.zarr", encoder="mean-rgb", progress=False).ok
        memory[label] = mem.max_mb()
    results["worker_peak_mb"] = memory
    print(
        f"peak worker RSS: {memory['1x']:.0f} MB for {args.size}², {memory['4x']:.0f} MB for {args.size * 2}² "
        f"(+{memory['4x'] / memory['1x'] - 1:.1%} for 4× the area)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
