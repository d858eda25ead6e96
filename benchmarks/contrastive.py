"""Why the contrastive encoder learnt nothing, and what it learns now: side by side in one run.

Encoders (P = 9, C = 16, width 32) train in-process for the same number of steps on 9-px windows
of the paper's synthetic images (digits everywhere, `PaperCase`), then `probe_encoder` scores the
digit class of grid cells of other images (cells holding a digit's centre inside a rectangle; an
MLP on the frozen codes, whole images held out):

(pairs, same window)  the former objective: a classifier on |a − b| and a·b says whether a pair
                      is one location (two augmentations of one window) or two
(InfoNCE, same window)  each view picks its partner among the batch's, both views one window
(InfoNCE, shifted)    the objective now: views shifted off the cell by up to a third of a patch
                      (`patches.views`)

beside the VAE, an untrained encoder and mean-RGB.

    ./dev bench contrastive [--steps 2000]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn

from nic_ray.datasets.synthetic_task import PaperCase
from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import build_objective
from nic_ray.encoder_training.patches import PatchSet, views
from nic_ray.encoder_training.probe import probe_encoder
from nic_ray.encoders import create_encoder, load_encoder
from nic_ray.encoders.nic import to_input

P, SIDE, BATCH = 9, 900, 64
SHAPE = {"code_size": 16, "width": 32, "patch_size": P}
LONG = (0.2, 0.5)  # larger rectangles than the paper's range: more probe cells an image


def grid_cells(image: np.ndarray) -> np.ndarray:
    n = image.shape[0] // P
    return image[: n * P, : n * P].reshape(n, P, n, P, 3).transpose(0, 2, 1, 3, 4)


def probe_set(seeds: range) -> PatchSet:
    patches, labels, groups = [], [], []
    for seed in seeds:
        case = PaperCase(SIDE, P, long_side=LONG, seed=seed)
        cells = grid_cells(case.image())
        y, x = case.centres.T
        for i in np.flatnonzero(case.tilted.contains(y, x) | case.upright.contains(y, x)):
            patches.append(cells[int(y[i]) // P, int(x[i]) // P])
            labels.append(case.classes[i])
            groups.append(seed)
    return PatchSet(np.stack(patches), np.array(labels), [str(c) for c in range(10)], np.array(groups))


class Windows:
    """Random 3P × 3P contexts around inked 9-px windows of the training images."""

    def __init__(self, seeds: range, rng: np.random.Generator):
        self.images = [
            np.pad(PaperCase(SIDE, P, long_side=LONG, seed=s).image(), ((P, P), (P, P), (0, 0)), "edge") for s in seeds
        ]
        self.rng = rng

    def contexts(self, n: int) -> np.ndarray:
        out = []
        while len(out) < n:
            image = self.images[self.rng.integers(len(self.images))]
            y, x = self.rng.integers(P, SIDE, size=2)
            if (255 - image[y : y + P, x : x + P].min(axis=-1)).mean() > 8:  # some ink
                out.append(image[y - P : y + 2 * P, x - P : x + 2 * P])
        return np.stack(out)


class PairClassifier(nn.Module):
    """The former objective, for the comparison: one window or two?"""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, c = encoder, encoder.code_size
        self.classifier = nn.Sequential(nn.Linear(2 * c, c), nn.LeakyReLU(0.2), nn.Linear(c, 1))

    def loss(self, a: torch.Tensor, b: torch.Tensor, strength: float) -> torch.Tensor:
        same = torch.rand(len(a)) < 0.5
        b = torch.where(same[:, None, None, None], b, b.roll(1, 0))  # another window of the batch
        ca, cb = self.encoder.encode(augment(to_input(torch.cat([a, b])), strength)).chunk(2)
        logit = self.classifier(torch.cat([(ca - cb).abs(), ca * cb], dim=1)).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logit, same.float())


def train(kind: str, windows: Windows, steps: int) -> nn.Module:
    torch.manual_seed(0)
    encoder = create_encoder("nic", seed=0, **SHAPE)
    if kind == "pairs, same window":
        model = PairClassifier(encoder)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    else:
        objective = build_objective("vae" if kind == "VAE" else "contrastive", encoder)
        optimizers = objective.optimizers(lr=2e-3)
    for _ in range(steps):
        context = windows.contexts(BATCH)
        pair = views(context, windows.rng, jitter=0 if "same window" in kind else 1 / 3)
        batch = {k: torch.from_numpy(v) for k, v in pair.items()}
        if kind == "pairs, same window":
            loss = model.loss(batch["a"], batch["b"], 0.5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            objective.step({"patch": batch["a"]} if kind == "VAE" else batch, optimizers, strength=0.5)
    return encoder.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    probe = probe_set(range(100, 112))
    windows = Windows(range(8), np.random.default_rng(0))
    accuracy = {
        "untrained": probe_encoder(create_encoder("nic", seed=0, **SHAPE), probe)["accuracy"],
        "mean-RGB": probe_encoder(load_encoder("mean-rgb"), probe)["accuracy"],
    }
    for kind in ("pairs, same window", "InfoNCE, same window", "InfoNCE, shifted", "VAE"):
        accuracy[kind] = probe_encoder(train(kind, windows, args.steps), probe)["accuracy"]
        print(f"{kind}: {accuracy[kind]:.3f}", flush=True)
    print(json.dumps({"probe_cells": len(probe.labels), "steps": args.steps, "accuracy": accuracy}, indent=2))


if __name__ == "__main__":
    main()
