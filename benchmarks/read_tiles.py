"""128-px patches per second: OpenSlide ``read_region`` per patch vs the fast tile path.

Side by side in one run, on the same cells (a band of rows through the middle) of a 16k × 16k synthetic Aperio-like slide
(240-px JPEG tiles, 0.5 µm/px) and of the real CMU-1-Small-Region slide, one thread and all
cores. Goal on a 2-core machine: the fast path ≥ 5× ``read_region`` per core.

    ./dev bench read_tiles [--size 16384] [--max-patches 6000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import openslide

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.slides import open_slide, read_cells, tile_grid, tissue_fraction
from nic_ray.slides.samples import cmu_small_region

from _slides import tissue_slide


def openslide_reader(path: Path, P: int):
    """(handle, new_pass): each pass gives OpenSlide an empty tile cache, as the fast path starts
    each call with one. CMU-1-Small-Region fits in OpenSlide's 32 MiB cache: from a warm cache it
    decodes nothing (3,420 patches/s against 2,570 cold) while the fast path decodes every tile."""
    osr = openslide.OpenSlide(str(path))  # thread-safe: one handle shared, as OpenSlide advises
    def read(chunk):
        for y, x in chunk:
            np.asarray(osr.read_region((int(x) * P, int(y) * P), 0, (P, P)).convert("RGB"))
    def new_pass():
        osr.set_cache(openslide.OpenSlideCache(32 << 20))
        return read
    return osr, new_pass


def rates(passes: dict, cells: np.ndarray, threads: int, rounds: int = 7) -> dict[str, list[float]]:
    """Patches/s of each pass in ``rounds`` alternating rounds: each round's figures are taken
    side by side, so a round's ratio is steady however busy this shared machine is meanwhile."""
    chunks = np.array_split(cells, threads)  # each thread reads its own rows
    result: dict[str, list[float]] = {name: [] for name in passes}
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            for name, new_pass in passes.items():
                read = new_pass()
                start = time.perf_counter()
                list(pool.map(read, chunks))
                result[name].append(len(cells) / (time.perf_counter() - start))
    return result


def bench(path: Path, max_patches: int, threads: int) -> dict:
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        assert grid.scale == 1 and grid.level == 0 and slide.fast_levels
        # Every cell of a band of rows through the middle: steady figures on any slide.
        H, W = grid.shape
        rows = min(H, max(1, max_patches // W))
        cells = np.argwhere(np.ones((rows, W), bool)) + [(H - rows) // 2, 0]
        tissue = tissue_fraction(slide, grid)[cells[:, 0], cells[:, 1]]
        fast = lambda: partial(read_cells, slide, grid)  # noqa: E731 (each call starts an empty tile cache)
        osr, slow = openslide_reader(path, grid.patch_size)
        read_cells(slide, grid, cells)  # warm the page cache: both paths then read from memory
        result = {"slide": path.name, "size": list(slide.dimensions), "patches": len(cells),
                  "tissue_share": float((tissue >= 26).mean())}
        for n in sorted({1, threads}):
            r = rates({"openslide": slow, "fast": fast}, cells, n)
            result |= {f"openslide_{n}t": float(np.median(r["openslide"])), f"fast_{n}t": float(np.median(r["fast"])),
                       f"ratio_{n}t": float(np.median(np.divide(r["fast"], r["openslide"])))}
        osr.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="synthetic slide side in pixels")
    parser.add_argument("--max-patches", type=int, default=6000, help="tissue patches read per slide")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    reuse_freed_memory()  # as the encoder actors that read tiles do
    results = [bench(p, args.max_patches, threads) for p in (tissue_slide(args.size), cmu_small_region())]
    print(f"\n128-px patches/s, medians of 7 alternating rounds ({threads} cores), ratio = median of the rounds' ratios; fast path = tile bytes read once, decoded once")
    print(f"{'slide':28} {'patches':>7} {'tissue':>6} {'openslide 1t':>12} {'fast 1t':>9} {'ratio':>6} "
          f"{f'openslide {threads}t':>12} {f'fast {threads}t':>9} {'ratio':>6}")
    for r in results:
        print(f"{r['slide']:28} {r['patches']:7d} {r['tissue_share']:6.0%} {r['openslide_1t']:12.0f} {r['fast_1t']:9.0f} {r['ratio_1t']:6.1f} "
              f"{r[f'openslide_{threads}t']:12.0f} {r[f'fast_{threads}t']:9.0f} {r[f'ratio_{threads}t']:6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
