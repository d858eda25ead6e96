"""128-px patches per second: OpenSlide ``read_region`` per patch vs the fast tile path.

Side by side in one run, on the same cells (a band of rows through the middle) of a 16k × 16k
synthetic Aperio-like slide (240-px JPEG tiles, 0.5 µm/px), of the real CMU-1-Small-Region slide, and of a 40× scan
(0.25 µm/px, no 0.5 level: each patch is 256² px of level 0 shrunk 2×, by both paths alike),
one thread and all cores. Goal on a 2-core machine: the fast path ≥ 5× ``read_region`` per core.

A third pass, "decode", only decodes each stored tile the cells touch, once, and keeps nothing:
the ceiling of any reader that gives OpenSlide's pixels (it must decode those tiles).

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
import tifffile
from _slides import tissue_slide

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.samples import cmu_small_region
from nic_ray.slides import open_slide, read_cells, tile_grid, tissue_fraction
from nic_ray.slides.resample import box_downsample
from nic_ray.slides.tiff_tiles import TiledPage

# A pass reads every cell once: new_pass(pool, threads) prepares it and gives the timed call.


def openslide_pass(path: Path, cells: np.ndarray, P: int, k: int):
    """(handle, new_pass): each pass gives OpenSlide an empty tile cache, as the fast path starts
    each call with one. CMU-1-Small-Region fits in OpenSlide's 32 MiB cache: from a warm cache it
    decodes nothing (3,420 patches/s against 2,570 cold) while the fast path decodes every tile.
    A patch is P·k level-0 pixels shrunk k× as the fast path shrinks them."""
    osr = openslide.OpenSlide(str(path))  # thread-safe: one handle shared, as OpenSlide advises
    L = P * k

    def read(chunk):
        for y, x in chunk:
            box_downsample(np.asarray(osr.read_region((int(x) * L, int(y) * L), 0, (L, L)).convert("RGB")), k)

    def new_pass(pool, threads):
        osr.set_cache(openslide.OpenSlideCache(32 << 20))
        chunks = np.array_split(cells, threads)  # each thread reads its own rows
        return lambda: list(pool.map(read, chunks))

    return osr, new_pass


def decode_pass(path: Path, cells: np.ndarray, P: int):
    """(page, new_pass) for decoding alone: each tile the cells (P level px) touch, once, split over the threads."""
    with tifffile.TiffFile(path) as tif:
        page = TiledPage(str(path), tif.pages[0])
    th, tw = page.tile_height, page.tile_width
    touched = sorted(
        {
            (r, c)
            for y, x in cells.tolist()
            for r in range(y * P // th, (min(y * P + P, page.height) - 1) // th + 1)
            for c in range(x * P // tw, (min(x * P + P, page.width) - 1) // tw + 1)
        }
    )

    def read(tiles):
        buffer = np.empty((th, tw, 3), np.uint8)  # as the fast path decodes: into one buffer per thread
        for r, c in tiles:
            page.tile(r, c, buffer)

    def new_pass(pool, threads):
        parts = [touched[i::threads] for i in range(threads)]
        return lambda: list(pool.map(read, parts))

    return page, new_pass


def rates(passes: dict, n_cells: int, threads: int, rounds: int = 7) -> dict[str, list[float]]:
    """Patches/s of each pass in ``rounds`` alternating rounds: each round's figures are taken
    side by side, so a round's ratio is steady however busy this shared machine is meanwhile."""
    result: dict[str, list[float]] = {name: [] for name in passes}
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            for name, new_pass in passes.items():
                run = new_pass(pool, threads)
                start = time.perf_counter()
                run()
                result[name].append(n_cells / (time.perf_counter() - start))
    return result


def bench(path: Path, max_patches: int, threads: int) -> dict:
    with open_slide(path) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        k = round(grid.scale)
        assert grid.scale == k and grid.level == 0 and slide.fast_levels
        # Every cell of a band of rows through the middle: steady figures on any slide.
        H, W = grid.shape
        rows = min(H, max(1, max_patches // W))
        cells = np.argwhere(np.ones((rows, W), bool)) + [(H - rows) // 2, 0]
        tissue = tissue_fraction(slide, grid)[cells[:, 0], cells[:, 1]]

        def fast(pool, n):  # each call starts an empty tile cache
            return partial(read_cells, slide, grid, cells, pool, n)

        osr, slow = openslide_pass(path, cells, grid.patch_size, k)
        page, decode = decode_pass(path, cells, grid.patch_size * k)
        read_cells(slide, grid, cells)  # warm the page cache: both paths then read from memory
        result = {
            "slide": path.name,
            "size": list(slide.dimensions),
            "shrink": k,
            "patches": len(cells),
            "tissue_share": float((tissue >= 26).mean()),
        }
        for n in sorted({1, threads}):
            r = rates({"openslide": slow, "fast": fast, "decode": decode}, len(cells), n)
            result |= {f"{name}_{n}t": float(np.median(v)) for name, v in r.items()}
            result |= {
                f"ratio_{n}t": float(np.median(np.divide(r["fast"], r["openslide"]))),
                f"decode_ratio_{n}t": float(np.median(np.divide(r["decode"], r["openslide"]))),
            }
        osr.close()
        page.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="synthetic slide side in pixels")
    parser.add_argument(
        "--max-patches", type=int, default=6000, help="patches read per slide (a quarter of them on the 40× scan)"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    reuse_freed_memory()  # as the encoder actors that read tiles do
    slides = [
        (tissue_slide(args.size), args.max_patches),
        (cmu_small_region(), args.max_patches),
        (tissue_slide(args.size, mpp=0.25), args.max_patches // 4),
    ]  # 4× the pixels a patch
    results = [bench(path, n, threads) for path, n in slides]
    print(
        f"\n128-px patches/s, medians of 7 alternating rounds ({threads} cores), ratio = median of the rounds' "
        "ratios to openslide; fast = tile bytes read once, decoded once; decode = only that (the ceiling)"
    )
    print(
        f"{'slide':30} {'patches':>7} {'tissue':>6}"
        + "".join(
            f" {f'openslide {n}t':>12} {f'fast {n}t':>8} {'ratio':>5} {f'decode {n}t':>9} {'ratio':>5}"
            for n in (1, threads)
        )
    )
    for r in results:
        print(
            f"{r['slide']:30} {r['patches']:7d} {r['tissue_share']:6.0%}"
            + "".join(
                f" {r[f'openslide_{n}t']:12.0f} {r[f'fast_{n}t']:8.0f} {r[f'ratio_{n}t']:5.1f}"
                f" {r[f'decode_{n}t']:9.0f} {r[f'decode_ratio_{n}t']:5.1f}"
                for n in (1, threads)
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
