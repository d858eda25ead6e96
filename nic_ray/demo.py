"""The embedded default job: synthetic slides compressed on a local Ray, one grid shown.

``nic-ray demo`` writes NIC synthetic-task slides as Aperio-like SVS at 0.25 µm/px, compresses
them with `compress` (Ray started embedded, mean-RGB encoder) into ``<out>/store.zarr``, and
renders the compressed grid of the first slide from the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import imagecodecs
import numpy as np

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import nic_synthetic_case
from nic_ray.store import Store


def run_demo(out: str | Path = "demo-out", n_slides: int = 3, size: int = 4096, seed: int = 0) -> dict:
    """Write ``n_slides`` synthetic slides into ``out``, compress them, return a summary."""
    out = Path(out)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n_slides):
        path = out / "slides" / f"synthetic-{i:03d}.svs"
        case = nic_synthetic_case(
            size=(size, size), n_digits=size // 32, rect_size=(1024, 640), digit_px=128, seed=seed + i
        )
        if not path.exists():
            write_slide(path, case.image, mpp=0.25, format="svs", tile=240, downsamples=(1, 2, 8))
        labels[path.stem] = case.label
    (out / "labels.csv").write_text("slide_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))

    result = compress([str(out / "slides")], str(out / "store.zarr"), encoder="mean-rgb")
    store = Store.open(out / "store.zarr")
    shown = sorted(labels)[0]
    grid = store.read_embeddings(shown, orientation=0)  # (3, H, W): mean colour of each cell
    tissue = store.read_tissue(shown)
    picture = np.kron((grid.transpose(1, 2, 0) * 255).round().astype(np.uint8), np.ones((8, 8, 1), np.uint8))
    (out / "grid.png").write_bytes(imagecodecs.png_encode(picture))
    info = store.slide_info(shown)
    summary = {
        "store": str(out / "store.zarr"),
        "report": result.report,
        "labels": labels,
        "shown": shown,
        "level": info["level"],
        "mpp": info["mpp"],
        "grid": info["grid"],
        "tissue_cells": info["n_tissue_tiles"],
        "grid_png": str(out / "grid.png"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["tissue_map"] = "\n".join("".join("#" if v >= 26 else "." for v in row) for row in tissue)
    return summary
