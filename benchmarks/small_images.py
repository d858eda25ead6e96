"""Compression of an archive of many small images (biopsies, TMA cores), side by side in one run:

  (a) the work alone: each image planned (opened, tissue found, its group created) and its block
      read, encoded and written, one after another in this process, as one core would
  (b) `nic-ray compress` end to end, planning tasks a few to a CPU (what compress does)
  (c) the same with one planning task an image (what it did before)

Images per second each, and the ratios (b)/(c) and (b)/(a × cores): what Ray's tasks cost next
to work this small. Mean-RGB and 16-px patches, so that the work is least and the cost shows.

    ./dev bench small_images [--images 320] [--size 320]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

import nic_ray.compress.pipeline as pipeline
from nic_ray.compress import compress
from nic_ray.compress.encode import EncodeBlocks
from nic_ray.compress.stages import Settings, plan_slide
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.encoders import encoder_identity, load_encoder
from nic_ray.store import Store, StoreConfig

CORES = os.cpu_count() or 1
PATCH = 16


def work_alone(images: list[Path], root: Path) -> float:
    """(a): images a second, planned and encoded in this process."""
    encoder = load_encoder("mean-rgb", patch_size=PATCH)
    url = str(root / "alone.zarr")
    Store.create_or_open(url, StoreConfig(encoder_identity("mean-rgb", encoder), PATCH, 1))
    settings = Settings(url, encoder.mpp, PATCH, PATCH, 1, encoder.code_size, 26)
    actor = EncodeBlocks("mean-rgb", {"patch_size": PATCH}, settings, 256, False)
    start = time.perf_counter()
    for path in images:
        for row in plan_slide({"slide_id": path.stem, "url": str(path), "mpp": np.nan}, settings):
            actor({k: [v] for k, v in row.items()})
    return len(images) / (time.perf_counter() - start)


def end_to_end(images: Path, root: Path, count: int, planners_per_image: bool) -> float:
    """(b) or (c): images a second through `compress`."""
    capacity = pipeline.cluster_capacity
    if planners_per_image:  # as many CPUs as images: a planning task each
        pipeline.cluster_capacity = lambda: {"CPU": count}
    try:
        store = root / f"ray-{planners_per_image}.zarr"
        start = time.perf_counter()
        result = compress([str(images)], str(store), encoder="mean-rgb", patch_size=PATCH, progress=False)
        seconds = time.perf_counter() - start
    finally:
        pipeline.cluster_capacity = capacity
    assert result.counts() == {"complete": count}, result.counts()
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="compression of many small images")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=320, help="px a side")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="small-images-"))
    try:
        (root / "images").mkdir()
        images = [root / "images" / f"i{i:04d}.tiff" for i in range(args.images)]
        for i, path in enumerate(images):
            write_slide(path, TissuePainter(args.size, args.size, seed=i), 0.5, downsamples=(1, 4))
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=CORES + 2, include_dashboard=False, logging_level="ERROR")
        compress([str(images[0])], str(root / "warm.zarr"), encoder="mean-rgb", patch_size=PATCH, progress=False)
        # (a) around (b) and (c): this shared machine's speed drifts within minutes.
        before = work_alone(images, root)
        b = end_to_end(root / "images", root, args.images, planners_per_image=False)
        c = end_to_end(root / "images", root, args.images, planners_per_image=True)
        after = work_alone(images, root)
        a = (before + after) / 2
        results = {"images": args.images, "size": args.size, "cores": CORES, "a_alone": [before, after]}
        results |= {"b_compress": b, "c_task_an_image": c, "b_over_c": b / c, "b_over_a_cores": b / (a * CORES)}
        print(
            f"{args.images} images of {args.size}² px, {CORES} cores: (a) alone {before:.0f}→{after:.0f}/s  "
            f"(b) compress {b:.1f}/s  (c) a task an image {c:.1f}/s  b/c {b / c:.2f}  "
            f"b/(a·cores) {b / (a * CORES):.2f}",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
