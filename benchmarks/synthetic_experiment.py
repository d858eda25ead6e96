"""The paper's synthetic experiment (TPAMI 2019 §4.1.1, §4.2, Figs. 6–7), end to end.

Writes the task's data set (`nic-ray synthetic`), trains the encoders on its encoder images
(the oracle: supervised on digit classes; VAE, contrastive, BiGAN: unsupervised), compresses the
other images with each and with mean-RGB and an untrained encoder, trains the slide CNN on each
store (10 classes: the tilted rectangle's digit class), evaluates it on the independent test
images, and runs Grad-CAM on them. One table: per encoder, test accuracy with its 95% interval,
mean Jaccard of the post-processed Grad-CAM region against the tilted rectangle, and accuracy by
lesion size (quartiles of the long side, Fig. 6-a). It is printed, and written dated to
docs/synthetic_experiment.md with the scale it ran at.

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

from nic_ray.compress import compress
from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.datasets.samples import data_dir
from nic_ray.datasets.synthetic_set import write_synthetic_set
from nic_ray.encoder_training.patches import PatchSet, load_patch_set
from nic_ray.encoder_training.probe import probe_encoder
from nic_ray.encoder_training.trainer import train_encoder
from nic_ray.encoders import create_encoder, load_encoder, save_encoder
from nic_ray.explain.run_heatmaps import heatmaps
from nic_ray.train import predict, train
from nic_ray.train.metrics import bootstrap_intervals, task_metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "synthetic_experiment.md"
ENCODERS = ("oracle", "contrastive", "vae", "bigan", "untrained", "mean-rgb")
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
    crop_size: int


SCALES = {
    # Minutes: that every stage runs (its figures mean nothing).
    "smoke": Scale(80, 180, 0.35, 8, 1, 50, 8, 2, 20),
    # 2-core CPU, about an hour: 1,200 images of 360² px (40² grids), 420 of them tested.
    "small": Scale(1200, 360, 0.35, 32, 4, 150, 32, 30, 40),
    # §4.1.1: 50,000 images of 3600² px, half tested; C = 16, the NIC encoder's width; 400² grids.
    "paper": Scale(50_000, 3600, 0.5, 128, 10, 2000, 128, 100, 400),
}


def train_encoders(data: Path, out: Path, scale: Scale, wanted: list[str]) -> dict[str, str]:
    """Encoder name → what `compress --encoder` takes."""
    common = {"patch_size": 9, "mpp": 0.5, "code_size": 16, "width": scale.encoder_width, "batch_size": 64}
    encoders = {}
    for name in wanted:
        start = time.perf_counter()
        if name == "mean-rgb":
            encoders[name] = "mean-rgb"
            continue
        if name == "untrained":
            encoder = create_encoder(
                "nic", seed=0, **{k: common[k] for k in ("patch_size", "mpp", "code_size", "width")}
            )
            encoders[name] = str(save_encoder(encoder, out / "untrained"))
            continue
        method = "multitask" if name == "oracle" else name
        source = (
            {"tasks": {"digit": str(data / "digits.csv")}}
            if name == "oracle"
            else {"slides": [str(data / "encoders.csv")]}
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
        encoders[name] = result.encoder
        print(f"encoder {name}: {time.perf_counter() - start:.0f} s, last epoch {result.history[-1]}", flush=True)
    return encoders


def digit_probe(data: Path, count: int = 6000) -> PatchSet:
    """Up to ``count`` digit cells of the encoder images with their class, their image as group
    (the probe holds out whole images). The oracle learnt these very labels: its probe is an
    upper reference, not a held-out figure."""
    patches = load_patch_set(data / "digits.csv", mpp=0.5, patch_size=9)
    keep = np.sort(np.random.default_rng(0).permutation(len(patches.labels))[:count])
    return PatchSet(patches.patches[keep], patches.labels[keep], patches.classes, patches.groups[keep])


def lesion_quartiles(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    """The quartile (0–3) of each test row's long side, and the quartiles' ranges in px."""
    long = np.array([float(r["long_side"]) for r in rows])
    edges = np.quantile(long, [0, 0.25, 0.5, 0.75, 1])
    quartile = np.clip(np.searchsorted(edges, long, side="right") - 1, 0, 3)
    return quartile, [f"{edges[q]:.0f}–{edges[q + 1]:.0f}" for q in range(4)]


def run_one(name: str, encoder: str, data: Path, out: Path, scale: Scale, test: list[dict], probe: PatchSet) -> dict:
    probed = probe_encoder(load_encoder(encoder), probe)["accuracy"]
    store = out / f"{name}.zarr"
    start = time.perf_counter()
    # Every cell: a 9-px cell between digits is blank, and blank is what the CNN must see there.
    result = compress(
        [str(data / "slides")], str(store), encoder=encoder, patch_size=9, tissue_threshold=0.0, progress=False
    )
    if not result.ok:
        raise SystemExit(f"{name}: compression failed: {result.counts()}")
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
    quartile, _ = lesion_quartiles(test)
    cams = heatmaps(
        str(run),
        str(store),
        str(out / f"{name}-heatmaps"),
        slides=str(data / "heatmaps.csv"),
        masks=str(data / "masks"),
    )
    jaccard = [j for j in cams.column("jaccard").to_pylist() if j is not None]
    return {
        "encoder": name,
        "probe": probed,
        "accuracy": accuracy,
        "low": low,
        "high": high,
        "jaccard": float(np.mean(jaccard)) if jaccard else float("nan"),
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
        *(f"acc., long side {r} px" for r in ranges),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            r["encoder"],
            f"{r['probe']:.3f}",
            f"{r['accuracy']:.3f} ({r['low']:.3f}–{r['high']:.3f})",
            f"{r['jaccard']:.3f}",
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
P = 9 px patches, C = 16 codes; {minutes:.0f} minutes on this machine ({os.cpu_count()} CPUs).

{text}

Digit probe: held-out accuracy of an MLP on the frozen codes of digit cells (their class; whole
encoder images held out; the oracle learnt these labels, so its figure is a reference, not a
held-out one). Accuracy: on the independent test images, with its 95% bootstrap interval. Jaccard: the Grad-CAM
region (smoothed, thresholded at half its peak, small parts dropped) against the tilted rectangle,
averaged over the first {HEATMAP_SLIDES} test images. Accuracy by lesion size: test images in quartiles of the tilted
rectangle's long side.
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
    encoders = train_encoders(data, out / "encoders", scale, args.encoders)
    # One line an encoder, kept: the same command again goes on with the encoders not done.
    done_file = out / "results.jsonl"
    done = {r["encoder"]: r for r in map(json.loads, done_file.read_text().splitlines())} if done_file.exists() else {}
    probe = digit_probe(data)
    for name in args.encoders:
        if name not in done:
            done[name] = run_one(name, encoders[name], data, out, scale, test, probe)
            with open(done_file, "a") as f:
                f.write(json.dumps(done[name]) + "\n")
        print(json.dumps(done[name]), flush=True)
    results = [done[name] for name in args.encoders]
    _, ranges = lesion_quartiles(test)
    text = table(results, ranges)
    print(text)
    if not args.no_doc:
        write_doc(text, args.scale, scale, counts, (time.perf_counter() - started) / 60)


if __name__ == "__main__":
    main()
