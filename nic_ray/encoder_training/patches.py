"""Patches to train and probe encoders with: sampled from slides, paired, or from labelled sets.

From slides (unsupervised methods), with Ray Data: `plan_patches` picks up to ``per_slide`` tissue
cells of a slide's grid at the training resolution; `read_patches` reads a batch of them (each
stored tile decoded once per slide), with the cells around each where contrastive views are cut
from them (`views`). Labelled patch sets (multitask training, probing) are an image folder (one
sub-folder a class) or a table of patch locations in slides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nic_ray.errors import NicError
from nic_ray.slides import OpenSlides, open_slide, read_cells, read_target_region, tile_grid, tissue_fraction
from nic_ray.tables import read_table

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_AROUND = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # a cell and its 8 neighbours
JITTER = 1 / 3  # contrastive views lie up to a third of a patch off the cell, each its own way


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
    """Rows (slide, url, mpp, y, x) of the tissue cells picked in ``row``'s slide; one row with
    ``error`` set if the slide cannot be read."""
    base = {"slide": int(row["slide"]), "url": str(row["url"]), "mpp": float(row["mpp"]), "error": ""}
    try:
        with open_slide(base["url"], mpp=None if np.isnan(base["mpp"]) else base["mpp"]) as slide:
            grid = tile_grid(slide, sampling.mpp, sampling.patch_size)
            tissue = tissue_fraction(slide, grid)
    except NicError as e:
        return [{**base, "y": -1, "x": -1, "error": str(e)}]
    threshold = round(sampling.tissue * 255)
    cells = np.argwhere(tissue >= threshold)
    if len(cells) == 0:
        return [{**base, "y": -1, "x": -1, "error": f"{base['url']}: no tissue at {sampling.tissue:.0%} of a cell"}]
    rng = np.random.default_rng([sampling.seed, base["slide"]])
    picked = cells[rng.choice(len(cells), min(sampling.per_slide, len(cells)), replace=False)]
    return [{**base, "y": int(y), "x": int(x)} for y, x in picked]


_OPEN = OpenSlides(16)


def read_patches(batch: dict[str, np.ndarray], sampling: PatchSampling, context: bool = False) -> dict[str, np.ndarray]:
    """A batch of planned rows → ``patch`` (n, P, P, 3) uint8 and ``slide``; with ``context``,
    ``context`` (n, 3P, 3P, 3) instead: the cell amid its 8 neighbours (edge cells repeated at
    the slide's border)."""
    n, P = len(batch["slide"]), sampling.patch_size
    k = 3 if context else 1
    out = np.empty((n, k, k, P, P, 3), np.uint8)
    for url in np.unique(batch["url"]):
        rows = np.flatnonzero(batch["url"] == url)
        slide = _OPEN.get(str(url), float(batch["mpp"][rows[0]]))
        grid = tile_grid(slide, sampling.mpp, P)
        cells = np.stack([batch["y"][rows], batch["x"][rows]], axis=1)
        if context:
            cells = np.clip(cells[:, None] + _AROUND, 0, np.array(grid.shape) - 1).reshape(-1, 2)
        out[rows] = read_cells(slide, grid, cells).reshape(len(rows), k, k, P, P, 3)
    image = out.transpose(0, 1, 3, 2, 4, 5).reshape(n, k * P, k * P, 3)
    return {"context" if context else "patch": image, "slide": np.asarray(batch["slide"])}


def views(context: np.ndarray, rng: np.random.Generator, jitter: float = JITTER) -> dict[str, np.ndarray]:
    """Two views ``a``, ``b`` (n, P, P, 3) of each cell of ``context`` (n, 3P, 3P, 3): windows
    shifted from the cell by up to ``jitter`` of a patch, each by its own draw, so that the
    two share what lies there but not its exact placement (contrastive training's positives).

    >>> context = np.zeros((2, 27, 27, 3), np.uint8)
    >>> {k: v.shape for k, v in views(context, np.random.default_rng(0)).items()}
    {'a': (2, 9, 9, 3), 'b': (2, 9, 9, 3)}
    """
    n, P = len(context), context.shape[1] // 3
    reach = int(P * jitter)
    out = {}
    for name in ("a", "b"):
        dy, dx = rng.integers(-reach, reach + 1, size=(2, n)) + P
        out[name] = np.stack([c[y : y + P, x : x + P] for c, y, x in zip(context, dy, dx)])
    return out


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
