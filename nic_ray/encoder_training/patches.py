"""Patches to train and probe encoders with: sampled from slides, paired, or from labelled sets.

From slides (unsupervised methods), with Ray Data: `plan_patches` picks up to ``per_slide`` tissue
cells of a slide's grid at the training resolution, each with an adjacent non-overlapping
neighbour cell; `read_patches` reads a batch of them (each stored tile decoded once per slide).
`make_pairs` turns a batch into contrastive pairs. Labelled patch sets (multitask training,
probing) are an image folder (one sub-folder a class) or a table of patch locations in slides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nic_ray.errors import NicError
from nic_ray.slides import OpenSlides, open_slide, read_cells, read_target_region, tile_grid, tissue_fraction
from nic_ray.tables import read_table

ADJACENT = 0.75  # share of "different" pairs that are neighbours; the rest come from other slides
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_STEPS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])


class PatchSetError(NicError):
    """A labelled patch set that cannot be read as given."""


@dataclass(frozen=True)
class PatchSampling:
    """Where training patches come from: P-px patches at ``mpp`` in cells ≥ ``tissue`` tissue."""

    mpp: float = 0.5
    patch_size: int = 128
    per_slide: int = 256
    tissue: float = 0.5
    seed: int = 0


def plan_patches(row: dict, sampling: PatchSampling) -> list[dict]:
    """Rows (slide, url, mpp, y, x, ny, nx) of the tissue cells picked in ``row``'s slide, and
    their neighbours; one row with ``error`` set if the slide cannot be read."""
    base = {"slide": int(row["slide"]), "url": str(row["url"]), "mpp": float(row["mpp"]), "error": ""}
    try:
        with open_slide(base["url"], mpp=None if np.isnan(base["mpp"]) else base["mpp"]) as slide:
            grid = tile_grid(slide, sampling.mpp, sampling.patch_size)
            tissue = tissue_fraction(slide, grid)
    except NicError as e:
        return [{**base, "y": -1, "x": -1, "ny": -1, "nx": -1, "error": str(e)}]
    threshold = round(sampling.tissue * 255)
    cells = np.argwhere(tissue >= threshold)
    if len(cells) == 0:
        return [
            {
                **base,
                "y": -1,
                "x": -1,
                "ny": -1,
                "nx": -1,
                "error": f"{base['url']}: no tissue at {sampling.tissue:.0%} of a cell",
            }
        ]
    rng = np.random.default_rng([sampling.seed, base["slide"]])
    picked = cells[rng.choice(len(cells), min(sampling.per_slide, len(cells)), replace=False)]
    rows = []
    for y, x in picked:
        around = [
            (y + dy, x + dx) for dy, dx in _STEPS if 0 <= y + dy < tissue.shape[0] and 0 <= x + dx < tissue.shape[1]
        ]
        in_tissue = [c for c in around if tissue[c] >= threshold]
        ny, nx = (in_tissue or around)[rng.integers(len(in_tissue or around))]
        rows.append({**base, "y": int(y), "x": int(x), "ny": int(ny), "nx": int(nx)})
    return rows


_OPEN = OpenSlides(16)


def read_patches(batch: dict[str, np.ndarray], sampling: PatchSampling) -> dict[str, np.ndarray]:
    """A batch of planned rows → ``patch`` and ``neighbour`` (n, P, P, 3) uint8, and ``slide``."""
    n, P = len(batch["slide"]), sampling.patch_size
    patch, neighbour = np.empty((n, P, P, 3), np.uint8), np.empty((n, P, P, 3), np.uint8)
    for url in np.unique(batch["url"]):
        rows = np.flatnonzero(batch["url"] == url)
        slide = _OPEN.get(str(url), float(batch["mpp"][rows[0]]))
        grid = tile_grid(slide, sampling.mpp, P)
        cells = np.stack([batch["y"][rows], batch["x"][rows]], axis=1)
        around = np.stack([batch["ny"][rows], batch["nx"][rows]], axis=1)
        both = read_cells(slide, grid, np.concatenate([cells, around]))
        patch[rows], neighbour[rows] = both[: len(rows)], both[len(rows) :]
    return {"patch": patch, "neighbour": neighbour, "slide": np.asarray(batch["slide"])}


def make_pairs(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Contrastive pairs (a, b) from a batch of patches with their neighbours and slides.

    Half are *same* (one location twice: the objective augments each view on its own); of the
    *different*, 75% pair a patch with its neighbour and 25% with a patch of another slide in the
    batch (its neighbour where the batch holds one slide only). ``kind``: 0 same, 1 adjacent,
    2 other slide.
    """
    patch, slide = batch["patch"], batch["slide"]
    n = len(patch)
    same = rng.random(n) < 0.5
    kind = np.where(same, 0, np.where(rng.random(n) < ADJACENT, 1, 2))
    b = patch.copy()
    b[kind == 1] = batch["neighbour"][kind == 1]
    for i in np.flatnonzero(kind == 2):
        others = np.flatnonzero(slide != slide[i])
        if len(others):
            b[i] = patch[rng.choice(others)]
        else:
            kind[i], b[i] = 1, batch["neighbour"][i]
    return {"a": patch, "b": b, "same": same, "kind": kind}


@dataclass(frozen=True)
class PatchSet:
    """Labelled patches: (n, P, P, 3) uint8, labels (n,) indexing ``classes``, and where known
    the slide each came from (``groups``), which a held-out split must not share."""

    patches: np.ndarray
    labels: np.ndarray
    classes: list[str]
    groups: np.ndarray | None = None


def load_patch_set(source: str | os.PathLike, mpp: float = 0.5, patch_size: int = 128) -> PatchSet:
    """An image folder (``<source>/<class>/*.png``, images of P × P) or a CSV/Parquet table of
    patch locations: ``url`` (slide), ``x``, ``y`` (top-left, in pixels at ``mpp``), ``label``.

    Example::

        tissue_types = load_patch_set("kather100k/")  # ADI/, BACK/, ..., TUM/
        tumour = load_patch_set("tumour_patches.csv")
    """
    source = str(source)
    if Path(source).is_dir():
        return _folder(Path(source), patch_size)
    if source.endswith((".csv", ".parquet")):
        return _locations(source, mpp, patch_size)
    raise PatchSetError(f"{source}: not an image folder or a CSV/Parquet table of patch locations")


def _folder(root: Path, P: int) -> PatchSet:
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    patches, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                image = np.asarray(Image.open(file).convert("RGB"))
            except OSError as e:
                raise PatchSetError(f"{file}: not a readable image ({e})") from None
            if image.shape[:2] != (P, P):
                raise PatchSetError(f"{file}: {image.shape[1]}×{image.shape[0]} px, expected {P}×{P}")
            patches.append(image)
            labels.append(index)
    if len(classes) < 2 or not patches:
        raise PatchSetError(f"{root}: needs a sub-folder of images for each of at least 2 classes")
    return PatchSet(np.stack(patches), np.array(labels), classes)


def _locations(path: str, mpp: float, P: int) -> PatchSet:
    table = read_table(path, "patch table", PatchSetError)
    missing = {"url", "x", "y", "label"} - set(table.column_names)
    if missing:
        raise PatchSetError(f"{path}: needs columns url, x, y, label (missing {', '.join(sorted(missing))})")
    rows = table.to_pylist()
    classes = sorted({str(r["label"]) for r in rows})
    if len(classes) < 2:
        raise PatchSetError(
            f"{path}: a single class ({classes[0] if classes else 'none'}); a patch set needs two or more"
        )
    patches = np.empty((len(rows), P, P, 3), np.uint8)
    by_slide: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if not (isinstance(r["x"], int) and isinstance(r["y"], int) and r["x"] >= 0 and r["y"] >= 0):
            raise PatchSetError(f"{path}: row {i + 1}: x and y must be non-negative integers")
        by_slide.setdefault(str(r["url"]), []).append(i)
    for url, indices in by_slide.items():
        with open_slide(url) as slide:
            grid = tile_grid(slide, mpp, P)
            for i in indices:
                patches[i] = read_target_region(slide, grid, rows[i]["x"], rows[i]["y"], P, P)
    labels = np.array([classes.index(str(r["label"])) for r in rows])
    return PatchSet(patches, labels, classes, np.array([str(r["url"]) for r in rows]))
