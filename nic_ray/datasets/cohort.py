"""A cohort with a slide-level label and survival that mean-RGB grids show plainly: for the
training tests, the sweep tests and the benchmarks of training and tuning.

Example::

    root = write_stained_cohort(Path("cohort"), 28)
    # root/slides/s000.tiff ..., root/masks/s000.npy ..., root/labels.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import nic_synthetic_case

PURPLE, BROWN = np.array([80, 40, 140]), np.array([150, 90, 30])
SPLIT = ["train", "train", "train", "train", "val", "test", "test"]


def write_stained_cohort(root: Path, n: int) -> Path:
    """``n`` NIC synthetic slides (1024² px at 0.5 µm/px) whose tilted rectangle is inked and
    tinted between haematoxylin purple (s = 0) and brown (s = 1), in ``root``/slides, their
    lesion masks in ``root``/masks, and ``root``/labels.csv: label s > 0.5, survival times
    exponential with log-hazard 5·s, split roles 4:1:2 (train, val, test). Returns ``root``."""
    (root / "slides").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["slide_id,label,time,event,split"]
    for i in range(n):
        s = rng.uniform()
        stain = tuple((PURPLE * (1 - s) + BROWN * s).round().astype(int))
        case = nic_synthetic_case(
            size=(1024, 1024), n_digits=120, rect_size=(384, 256), digit_px=32, seed=i, lesion_stain=stain
        )
        write_slide(root / "slides" / f"s{i:03d}.tiff", case.image, mpp=0.5, tile=256, downsamples=(1, 4))
        np.save(root / "masks" / f"s{i:03d}.npy", case.mask)  # the lesion, at slide resolution
        death, censor = rng.exponential(np.exp(-5 * s)), rng.exponential(0.5)
        rows.append(f"s{i:03d},{int(s > 0.5)},{min(death, censor):.5f},{int(death <= censor)},{SPLIT[i % 7]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
