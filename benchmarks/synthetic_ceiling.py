"""How far the synthetic task's ceiling rises with scale: the slide CNN on perfect grids.

The paper's task (`PaperCase`) at several image sizes and training-set sizes; each image's grid
holds what a perfect encoder would read (each cell's digit class, one-hot: the ``truth`` row of
`synthetic_experiment.py`). The NIC slide CNN (`NICNet`, strides following the grid) trains on
them in plain torch (no Ray, no store: only the task and the CNN are measured) and is tested on
400 independent images: accuracy with its 95% interval, and by quartile of the tilted
rectangle's long side. What no encoder can beat at a given scale, and what scale the paper's
figures need.

    ./dev bench synthetic_ceiling [--steps 3000] [--threads 1] [--cases 360:540 ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from synthetic_experiment import truth_codes

from nic_ray.datasets.synthetic_task import DENSITY, PaperCase
from nic_ray.dihedral import ORIENTATIONS, dihedral
from nic_ray.train.metrics import bootstrap_intervals
from nic_ray.train.nic_cnn import NICNet, default_strides

TEST = 400
CASES = ["360:540", "360:2000", "360:5000", "720:540", "720:2000"]  # image side px : training images


def grids(size: int, seeds: range) -> tuple[torch.Tensor, torch.Tensor, list[PaperCase]]:
    """Truth grids (n, 11, G, G), labels, and the cases."""
    cases = [PaperCase(size, seed=s, label=s % 10) for s in seeds]
    x = np.stack([truth_codes(c.cell_classes(), 11) for c in cases])
    return torch.from_numpy(x), torch.tensor([c.label for c in cases]), cases


def run(size: int, images: int, steps: int) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = grids(size, range(images))
    test_x, test_y, tested = grids(size, range(10**6, 10**6 + TEST))
    net = NICNet(11, {"label": 10}, width=32, strides=default_strides(x.shape[-1]))
    optimiser = torch.optim.Adam(net.parameters(), 1e-2, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, 1e-4)
    for _ in range(steps):
        pick = torch.from_numpy(rng.integers(images, size=16))
        batch = dihedral(x[pick], int(rng.integers(ORIENTATIONS)), dims=(2, 3))
        loss = torch.nn.functional.cross_entropy(net.train()(batch)["label"], y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        logits = net.eval()(test_x)["label"]
    truth, log_probs = test_y.numpy(), torch.log_softmax(logits, 1).numpy()
    right = log_probs.argmax(1) == truth
    low, high = bootstrap_intervals("multiclass", truth, log_probs)["accuracy"]
    long = np.array([c.tilted.long for c in tested])
    digits = np.array([c.tilted.long * c.tilted.short * DENSITY for c in tested])  # expected digits in the lesion
    quartile = np.digitize(long, np.quantile(long, [0.25, 0.5, 0.75]))
    return {
        "size": size,
        "images": images,
        "accuracy": right.mean(),
        "low": low,
        "high": high,
        "by_quartile": [(right[quartile == q].mean(), np.median(digits[quartile == q])) for q in range(4)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of 16 grids a run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cases", nargs="+", default=CASES, help="SIDE:IMAGES, image side in px and training images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.steps} steps of 16 grids a run; {TEST} test images; chance 0.1")
    print("| image side (grid) | training images | accuracy (95% CI) | by long-side quartile: accuracy (digits) | s |")
    print("|---|---|---|---|---|")
    for size, images in (map(int, case.split(":")) for case in args.cases):
        start = time.perf_counter()
        r = run(size, images, args.steps)
        quartiles = ", ".join(f"{a:.2f} ({d:.1f})" for a, d in r["by_quartile"])
        print(
            f"| {size} px ({size // 9}²) | {images} | {r['accuracy']:.3f} ({r['low']:.3f}–{r['high']:.3f}) "
            f"| {quartiles} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
