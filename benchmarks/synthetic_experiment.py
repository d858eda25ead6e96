"""The paper's synthetic experiment (TPAMI 2019 §4.1.1, §4.2, Figs. 6–7), end to end.

Writes the task's data set (`nic-ray synthetic`), trains the encoders on its encoder images
(the oracle: supervised on digit classes; VAE, contrastive, BiGAN: unsupervised), compresses the
other images with each and with mean-RGB and an untrained encoder, trains the slide CNN on each
store (10 classes: the tilted rectangle's digit class), evaluates it on the independent test
images, and runs Grad-CAM on them. A row ``truth`` is the task's ceiling at the scale run: grids
holding what a perfect encoder would read (each cell's digit class, `nic-ray synthetic`'s
``cells/``), through the same CNN, test and Grad-CAM. One table: per encoder, test accuracy with
its 95% interval, mean Jaccard of the post-processed Grad-CAM region against the tilted rectangle,
and accuracy by lesion size (quartiles of the long side, Fig. 6-a). It is printed, and written
dated to docs/synthetic_experiment.md with the scale it ran at. A second run goes on with the
encoders not done (``results.jsonl`` in ``--out``).

The default scale completes in about an hour on 2 CPU cores; ``--scale paper`` is the paper's
(50,000 images of 3600² px, encoders of width 128, 400-cell crops) for a cluster or a GPU.

    ./dev bench synthetic_experiment [--scale small|paper] [--out DIR] [--encoders ...]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
from PIL import Image

from nic_ray.compress import compress
from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.samples import data_dir
from nic_ray.datasets.synthetic_set import write_synthetic_set
from nic_ray.datasets.synthetic_task import DENSITY
from nic_ray.encoder_training.patches import PatchSet, load_patch_set
from nic_ray.encoder_training.probe import probe_encoder
from nic_ray.encoder_training.trainer import train_encoder
from nic_ray.encoders import create_encoder, load_encoder, save_encoder
from nic_ray.explain.run_heatmaps import heatmaps
from nic_ray.store import Store
from nic_ray.train import predict, train
from nic_ray.train.metrics import bootstrap_intervals, task_metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "synthetic_experiment.md"
ENCODERS = ("truth", "oracle", "contrastive", "vae", "bigan", "untrained", "mean-rgb")
PAPER_JACCARD = 0.612  # the paper's best mean Jaccard (§4.2)
HEATMAP_SLIDES = 100  # test slides whose Grad-CAM regions are scored (each writes OME-Zarr, PNG, GeoJSON)


@dataclass(frozen=True)
class Scale:
    images: int
    size: int  # px a side; the grid is size / 9 cells
    test_share: float
    encoder_width: int
    encoder_epochs: int
    per_slide: int  # encoder training patches per encoder image and epoch
    cnn_width: int
    cnn_epochs: int
    cnn_steps: int  # optimiser steps an epoch (0: the default, training images / batch, at least 20)
    crop_size: int


SCALES = {
    # Minutes: that every stage runs (its figures mean nothing).
    "smoke": Scale(80, 180, 0.35, 8, 1, 50, 8, 2, 0, 20),
    # 2-core CPU, about an hour: 1,200 images of 360² px (40² grids), 420 of them tested; 100
    # steps an epoch, as 540 training images give 34, too few to learn the rule (docs).
    "small": Scale(1200, 360, 0.35, 32, 4, 150, 32, 40, 100, 40),
    # §4.1.1: 50,000 images of 3600² px, half tested; C = 16, the NIC encoder's width; 400² grids.
    "paper": Scale(50_000, 3600, 0.5, 128, 10, 2000, 128, 100, 0, 400),
}


def make_encoder(name: str, data: Path, out: Path, scale: Scale) -> str:
    """What `compress --encoder` takes for encoder ``name``, trained on the encoder images."""
    common = {"patch_size": 9, "mpp": 0.5, "code_size": 16, "width": scale.encoder_width, "batch_size": 64}
    if name == "mean-rgb":
        return "mean-rgb"
    if name in ("untrained", "truth"):  # the truth's codes are painted over an untrained encoder's
        encoder = create_encoder("nic", seed=0, **{k: common[k] for k in ("patch_size", "mpp", "code_size", "width")})
        return str(save_encoder(encoder, out / "untrained"))
    method = "multitask" if name == "oracle" else name
    source = (
        {"tasks": {"digit": str(data / "digits.csv")}} if name == "oracle" else {"slides": [str(data / "encoders.csv")]}
    )
    result = train_encoder(
        method,
        str(out / name),
        **source,
        **common,
        epochs=scale.encoder_epochs,
        per_slide=scale.per_slide,
        tissue=0.05,
        augment=0.0 if name == "oracle" else 0.5,
    )
    print(f"encoder {name}: last epoch {result.history[-1]}", flush=True)
    return result.encoder


def digit_probe(data: Path, count: int = 6000) -> PatchSet:
    """Up to ``count`` digit cells of the encoder images with their class, their image as group
    (the probe holds out whole images). The oracle learnt these very labels: its probe is an
    upper reference, not a held-out figure."""
    patches = load_patch_set(data / "digits.csv", mpp=0.5, patch_size=9)
    keep = np.sort(np.random.default_rng(0).permutation(len(patches.labels))[:count])
    return PatchSet(patches.patches[keep], patches.labels[keep], patches.classes, patches.groups[keep])


def lesion_quartiles(rows: list[dict], size: int) -> tuple[np.ndarray, list[str]]:
    """The quartile (0–3) of each test row's long side; each quartile's range in px and the
    digits its lesions hold (the median of their expected count)."""
    long = np.array([float(r["long_side"]) for r in rows])
    digits = np.array([float(r["lesion_share"]) for r in rows]) * size**2 * DENSITY
    edges = np.quantile(long, [0, 0.25, 0.5, 0.75, 1])
    quartile = np.clip(np.searchsorted(edges, long, side="right") - 1, 0, 3)
    return quartile, [
        f"{edges[q]:.0f}–{edges[q + 1]:.0f} px, ~{np.median(digits[quartile == q]):.1f} digits" for q in range(4)
    ]


def truth_codes(held: np.ndarray, code_size: int) -> np.ndarray:
    """float32 (code_size, H, W) of a cell truth (H, W) as `PaperCase.cell_classes` gives it:
    codes 0–9 the digit's class one-hot, code 10 a digit there, the rest 0."""
    codes = np.zeros((code_size, *held.shape), np.float32)
    y, x = held.nonzero()
    codes[held[y, x] - 1, y, x] = codes[10, y, x] = 1
    return codes


def paint_truth(store: Path, cells: Path) -> None:
    """Each slide's codes ← what its cells hold (`nic-ray synthetic`'s ``cells/``)."""
    opened = Store.open(store, mode="r+")
    for slide_id in opened.complete_slides():
        array = opened.embeddings(slide_id)
        held = np.asarray(Image.open(cells / f"{slide_id}.png"))
        array[:] = np.broadcast_to(truth_codes(held, array.shape[1]), array.shape).astype(np.float16)


def run_one(name: str, encoder: str, data: Path, out: Path, scale: Scale, test: list[dict], probe: PatchSet) -> dict:
    probed = float("nan") if name == "truth" else probe_encoder(load_encoder(encoder), probe)["accuracy"]
    store = out / f"{name}.zarr"
    start = time.perf_counter()
    # Every cell: a 9-px cell between digits is blank, and blank is what the CNN must see there.
    result = compress(
        [str(data / "slides")], str(store), encoder=encoder, patch_size=9, tissue_threshold=0.0, progress=False
    )
    if not result.ok:
        raise SystemExit(f"{name}: compression failed: {result.counts()}")
    if name == "truth":
        paint_truth(store, data / "cells")
    compressed = time.perf_counter() - start
    run = out / f"{name}-run"
    train(
        str(store),
        str(data / "labels.csv"),
        ["label:multiclass:label"],
        str(run),
        crop_size=scale.crop_size,
        width=scale.cnn_width,
        epochs=scale.cnn_epochs,
        steps_per_epoch=scale.cnn_steps,
    )
    trained = time.perf_counter() - start - compressed
    # One crop holds the whole grid where the crop is the grid: more would repeat it.
    crops = 1 if scale.crop_size * 9 >= scale.size else 10
    predicted = {
        r["slide_id"]: r for r in predict(str(run), str(store), str(data / "test.csv"), crops=crops).to_pylist()
    }
    probs = np.array([[predicted[r["slide_id"]][f"label_{c}"] for c in range(10)] for r in test])
    truth = np.array([int(r["label"]) for r in test])
    accuracy = task_metrics("multiclass", truth, np.log(probs))["accuracy"]
    low, high = bootstrap_intervals("multiclass", truth, np.log(probs))["accuracy"]
    right = probs.argmax(axis=1) == truth
    quartile, _ = lesion_quartiles(test, scale.size)
    cams = heatmaps(
        str(run),
        str(store),
        str(out / f"{name}-heatmaps"),
        slides=str(data / "heatmaps.csv"),
        masks=str(data / "masks"),
    )
    jaccard = {r["slide_id"]: r["jaccard"] for r in cams.to_pylist() if r["jaccard"] is not None}
    largest = [jaccard[r["slide_id"]] for r, q in zip(test, quartile) if q == 3 and r["slide_id"] in jaccard]
    return {
        "encoder": name,
        "probe": probed,
        "accuracy": accuracy,
        "low": low,
        "high": high,
        "jaccard": float(np.mean(list(jaccard.values()))) if jaccard else float("nan"),
        "jaccard_largest": float(np.mean(largest)) if largest else float("nan"),
        "by_quartile": [float(right[quartile == q].mean()) for q in range(4)],
        "compress_s": round(compressed),
        "train_s": round(trained),
    }


def table(results: list[dict], ranges: list[str]) -> str:
    head = [
        "encoder",
        "digit probe",
        "test accuracy (95% CI)",
        "mean Jaccard",
        "mean Jaccard, largest quartile",
        *(f"acc., long side {r}" for r in ranges),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            r["encoder"],
            "—" if np.isnan(r["probe"]) else f"{r['probe']:.3f}",
            f"{r['accuracy']:.3f} ({r['low']:.3f}–{r['high']:.3f})",
            f"{r['jaccard']:.3f}",
            f"{r['jaccard_largest']:.3f}",
            *(f"{a:.2f}" for a in r["by_quartile"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(text: str, scale_name: str, scale: Scale, counts: dict, minutes: float) -> None:
    today = datetime.date.today().isoformat()
    DOC.write_text(
        f"""# The paper's synthetic experiment

`benchmarks/synthetic_experiment.py` (§4.1.1, §4.2, Fig. 6 of Tellez et al., TPAMI 2019): digits
everywhere at one density, two rectangles (one upright, one tilted by 45° or 135°) whose digits take
each rectangle's class; label = the tilted rectangle's class (10 classes); lesion = the tilted
rectangle. scikit-learn's 8×8 digits stand in for MNIST, which cannot be downloaded where nic-ray
is built. Chance is 0.1; the paper's best mean Jaccard is {PAPER_JACCARD}.

{today}, scale `{scale_name}` ({json.dumps(asdict(scale))}): images by role {json.dumps(counts)};
P = 9 px patches, C = 16 codes; {minutes:.0f} minutes on this machine ({os.cpu_count()} CPUs) for the rows
(each: its encoder trained, the images compressed, the CNN trained and tested, Grad-CAM).

{text}

Rows: `truth` is the task's ceiling at this scale: its grids hold what a perfect encoder would
read, each cell's digit class one-hot (`nic-ray synthetic`'s `cells/`), through the same CNN, test
and Grad-CAM; the label depends on nothing else, so no encoder can give the CNN more. `oracle`
learnt the digit classes of the encoder images' cells; `contrastive`, `vae` and `bigan` learnt from
their pixels alone; `untrained` is the NIC encoder at its seeded initialisation; `mean-rgb` the
cell's mean colour.

Digit probe: held-out accuracy of an MLP on the frozen codes of digit cells (their class; whole
encoder images held out; the oracle learnt these labels, so its figure is a reference, not a
held-out one). Accuracy: on the independent test images, with its 95% bootstrap interval. Jaccard: the Grad-CAM
region (smoothed, thresholded at half its peak, small parts dropped) against the tilted rectangle,
averaged over the first {HEATMAP_SLIDES} test images, and over those of them in the largest quartile
of lesions. Accuracy by lesion size: test images in quartiles of the tilted rectangle's long side,
with the digits such a lesion holds (the median of their expected count: its area times the digit
density). At the paper's scale (3600² px) a lesion of the same share of the image side holds 100
times as many digits as here. `benchmarks/synthetic_ceiling.py` measures how the truth's accuracy
grows with images and their size (docs/benchmarks.md).
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--out", help="where data, encoders, stores and runs go (default: the data cache)")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--images", type=int, help="override the scale's image count (a quick look)")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.images:
        scale = Scale(**{**asdict(scale), "images": args.images})
    reuse_freed_memory()
    out = Path(args.out or data_dir() / "bench" / f"synthetic-{args.scale}-{scale.images}")
    data = out / "data"
    started = time.perf_counter()
    counts = write_synthetic_set(data, images=scale.images, size=scale.size, test_share=scale.test_share, seed=0)
    with open(data / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    test = [r for r in rows if r["split"] == "test"]
    for name, subset in (("test.csv", test), ("heatmaps.csv", test[:HEATMAP_SLIDES])):
        with open(data / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(subset)
    print(f"data: {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    ray.init(include_dashboard=False, logging_level="WARNING")
    # One line an encoder, kept: the same command again goes on with the encoders not done.
    done_file = out / "results.jsonl"
    done = {r["encoder"]: r for r in map(json.loads, done_file.read_text().splitlines())} if done_file.exists() else {}
    probe = digit_probe(data)
    for name in args.encoders:
        if name not in done:
            start = time.perf_counter()
            encoder = make_encoder(name, data, out / "encoders", scale)
            done[name] = run_one(name, encoder, data, out, scale, test, probe)
            done[name]["minutes"] = (time.perf_counter() - start) / 60
            with open(done_file, "a") as f:
                f.write(json.dumps(done[name]) + "\n")
        print(json.dumps(done[name]), flush=True)
    results = [done[name] for name in args.encoders]
    _, ranges = lesion_quartiles(test, scale.size)
    text = table(results, ranges)
    print(text)
    if not args.no_doc:
        write_doc(text, args.scale, scale, counts, sum(r["minutes"] for r in results))


if __name__ == "__main__":
    main()
