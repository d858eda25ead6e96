"""Encoder training, in one run: training patches/s per method, and the probe table (NIC Table 1).

(speed)  patches/s of one training step per method at the NIC encoder's size (C = 128,
         width 128), on in-memory batches of 128-px patches: the compute alone, on the CPU
         and on the GPU when there is one
(ray)    patches/s of `train_encoder` end to end (Ray Train, patches streamed from slides or
         patch sets), from the probe runs below
(probe)  each method trains an encoder (smaller: C = 32, width 32, so that all four train here
         in minutes) — VAE, contrastive and BiGAN on slides of the synthetic task's digit texture,
         multitask on as many labelled digit patches — then `probe_encoder` scores it on held-out
         digit patches (the digit class of a patch) beside mean-RGB and a randomly initialised
         encoder of the same architecture, with the MLP probe and the linear one. Goal (MLP
         probe): every trained encoder beats both; multitask is the upper reference.

  ./dev bench encoders [--epochs 15] [--slides 6] [--per-slide 200] [--augment S] [--lr 2e-3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import ray
import torch
from PIL import Image

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.samples import data_dir
from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import digit_mosaic, digit_patches
from nic_ray.encoder_training.objectives import build_objective
from nic_ray.encoder_training.patches import PatchSet, make_pairs
from nic_ray.encoder_training.probe import format_probes, probe_encoder
from nic_ray.encoder_training.trainer import to_device, train_encoder
from nic_ray.encoders import create_encoder, load_encoder

METHODS = ("vae", "contrastive", "bigan", "multitask")
# The probe's patches share the training patches' distribution, so augmentation only makes the
# supervised task harder (multitask probe 0.63 at 0.5 against 0.95 at 0, lr 1e-3); contrastive pairs need it.
AUGMENT = {"vae": 0.5, "contrastive": 0.5, "bigan": 0.5, "multitask": 0.0}
SMALL = {"code_size": 32, "width": 32}


def digit_slides(count: int) -> str:
    """``count`` 2048² slides of `digit_mosaic` at 0.5 µm/px; cached."""
    folder = data_dir() / "bench" / "digit-mosaics"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"m{i}.tiff"
        if not path.exists():
            partial = path.with_suffix(".partial.tiff")
            write_slide(partial, digit_mosaic(16, seed=1000 + i), mpp=0.5, tile=256, downsamples=(1, 4))
            partial.replace(path)
    return str(folder / "m*.tiff")


def step_rate(method: str, device: str = "cpu", batch_size: int = 32, steps: int = 4) -> float:
    """Patches/s of training steps of ``method`` at the NIC encoder's size, batches in memory."""
    torch.manual_seed(0)
    patches, labels = digit_patches(batch_size, seed=1)
    batch = {"patch": patches}
    extra = {}
    if method == "contrastive":
        batch = make_pairs(
            {"patch": patches, "neighbour": patches[::-1].copy(), "slide": np.arange(batch_size) % 4},
            np.random.default_rng(0),
        )
    if method == "multitask":
        batch, extra = {"digit": {"patch": patches, "label": labels}}, {"tasks": {"digit": 10}}
    batch = to_device(batch, torch.device(device))
    objective = build_objective(method, create_encoder("nic"), **extra).to(device)
    optimizers = objective.optimizers(lr=2e-4)
    objective.step(batch, optimizers, 1.0)  # warm-up; figures are read back, so each step ends synchronised
    start = time.perf_counter()
    for _ in range(steps):
        objective.step(batch, optimizers, 1.0)
    # A contrastive step encodes two patches of each pair: count patches through the encoder.
    return steps * batch_size * (2 if method == "contrastive" else 1) / (time.perf_counter() - start)


def digit_folder(root: str, n: int, seed: int) -> str:
    patches, labels = digit_patches(n, seed=seed)
    for i, (p, y) in enumerate(zip(patches, labels)):
        os.makedirs(f"{root}/{y}", exist_ok=True)
        Image.fromarray(p).save(f"{root}/{y}/{i}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--per-slide", type=int, default=200)
    parser.add_argument("--probe-patches", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--augment", type=float, help=f"strength for every method (default {AUGMENT})")
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    reuse_freed_memory()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    speed = {d: {m: round(step_rate(m, d, steps=4 if d == "cpu" else 20), 1) for m in args.methods} for d in devices}
    print("training steps, NIC size (C = 128, width 128), patches/s:", json.dumps(speed), flush=True)

    ray.init(include_dashboard=False, logging_level="WARNING")
    slides = digit_slides(args.slides)
    probe_set = PatchSet(*digit_patches(args.probe_patches, seed=7), [str(c) for c in range(10)])
    encoders, ray_rate, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        n_train = args.slides * args.per_slide  # as many labelled patches as the others see from slides
        tasks = {"digit": digit_folder(f"{tmp}/digits", n_train, seed=8)}
        for method in args.methods:
            start = time.perf_counter()
            data = {"tasks": tasks} if method == "multitask" else {"slides": [slides]}
            strength = AUGMENT[method] if args.augment is None else args.augment
            result = train_encoder(
                method,
                f"{tmp}/{method}",
                **data,
                epochs=args.epochs,
                batch_size=32,
                per_slide=args.per_slide,
                tissue=0.1,
                lr=args.lr,
                augment=strength,
                **SMALL,
            )
            seconds[method] = round(time.perf_counter() - start)
            ray_rate[method] = round(float(np.median([h["patches_per_s"] for h in result.history])), 1)
            encoders[method] = load_encoder(result.encoder)  # before its folder goes
            print(f"{method}: {seconds[method]} s, last epoch {result.history[-1]}", flush=True)
    encoders |= {"mean-rgb": load_encoder("mean-rgb"), "random nic": create_encoder("nic", seed=0, **SMALL)}
    accuracy = {}
    for classifier in ("mlp", "linear"):
        results = [
            {**probe_encoder(e, probe_set, classifier=classifier), "encoder": name} for name, e in encoders.items()
        ]
        print(f"\nprobe: {classifier} classifier on the frozen codes")
        print(format_probes(results))
        accuracy[classifier] = {r["encoder"]: round(r["accuracy"], 3) for r in results}
    baseline = max(accuracy["mlp"]["mean-rgb"], accuracy["mlp"]["random nic"])
    print(
        json.dumps(
            {
                "step_patches_per_s_nic_size": speed,
                "train_encoder_patches_per_s_small": ray_rate,
                "train_encoder_seconds": seconds,
                "probe_accuracy": accuracy,
                "beats_both_baselines_mlp_probe": {m: accuracy["mlp"][m] > baseline for m in args.methods},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
