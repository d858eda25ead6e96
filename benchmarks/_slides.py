"""Benchmark slides: H&E-like synthetic Aperio slides, written once and cached."""

from __future__ import annotations

import time
from pathlib import Path

from nic_ray.datasets.samples import data_dir
from nic_ray.datasets.synthetic import TissuePainter, write_slide


def tissue_slide(size: int, seed: int = 0, tissue: float = 0.5, mpp: float = 0.5) -> Path:
    """A size × size slide, 240-px JPEG tiles (Q=80) as Aperio writes them, levels 1, 4, 16;
    ``mpp=0.25`` makes it a 40× scan, read at 0.5 µm/px by shrinking level 0."""
    path = data_dir() / "bench" / (f"tissue-{size}-{seed}.svs" if mpp == 0.5 else f"tissue-{size}-{seed}-{mpp}mpp.svs")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        partial = path.with_suffix(".partial.svs")
        painter = TissuePainter(size, size, tissue=tissue, seed=seed)
        write_slide(partial, painter, mpp, format="svs", tile=240, quality=80, downsamples=(1, 4, 16))
        partial.replace(path)
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path
