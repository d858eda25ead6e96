"""The embedded default job: write a few synthetic slides and show the grid of one.

Until the compression engine lands, this is what ``nic-ray demo`` runs end to end: NIC
synthetic-task slides are written as Aperio-like SVS at 0.25 µm/px, one is opened, its level
for 0.5 µm/px chosen, its tissue found and its tissue cells encoded with mean-RGB.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import imagecodecs
import numpy as np
import torch

from nic_ray.encoders import load_encoder
from nic_ray.slides import open_slide, read_cells, tile_grid, tissue_fraction
from nic_ray.slides.synthetic import write_slide
from nic_ray.slides.synthetic_task import nic_synthetic_case


def run_demo(out: str | Path = "demo-out", n_slides: int = 3, size: int = 4096, seed: int = 0) -> dict:
    """Write ``n_slides`` synthetic slides into ``out``, compress the first, return its summary."""
    out = Path(out)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    paths, labels = [], {}
    for i in range(n_slides):
        case = nic_synthetic_case(size=(size, size), n_digits=size // 32, rect_size=(1024, 640), digit_px=128, seed=seed + i)
        path = out / "slides" / f"synthetic-{i:03d}.svs"
        write_slide(path, case.image, mpp=0.25, format="svs", tile=240, downsamples=(1, 2, 8))
        paths.append(path)
        labels[path.stem] = case.label

    encoder = load_encoder("mean-rgb")
    with open_slide(paths[0]) as slide:
        grid = tile_grid(slide, mpp=0.5, patch_size=128)
        tissue = tissue_fraction(slide, grid)
        cells = np.argwhere(tissue >= 26)  # ≥ 10% tissue
        with torch.inference_mode():
            codes = encoder(torch.from_numpy(read_cells(slide, grid, cells))).numpy()
    embedding = np.zeros((*grid.shape, encoder.code_size), np.float32)
    embedding[cells[:, 0], cells[:, 1]] = codes

    # The compressed grid as an image: one pixel a cell (mean colour), background black.
    picture = np.kron((embedding * 255).round().astype(np.uint8), np.ones((8, 8, 1), np.uint8))
    (out / "grid.png").write_bytes(imagecodecs.png_encode(picture))
    summary = {
        "slides": [str(p) for p in paths],
        "labels": labels,
        "shown": str(paths[0]),
        "level": grid.level,
        "mpp": grid.mpp,
        "grid": list(grid.shape),
        "tissue_cells": int(len(cells)),
        "seconds": round(time.perf_counter() - start, 2),
        "grid_png": str(out / "grid.png"),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["tissue_map"] = "\n".join("".join("#" if v >= 26 else "." for v in row) for row in tissue)
    return summary
