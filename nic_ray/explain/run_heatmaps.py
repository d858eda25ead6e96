"""`heatmaps`: where a trained run looked on each slide of a store, written where people look.

For each slide and target (`TASK[:CLASS]`), into ``<out>/<slide_id>/``:

```
<target>.ome.zarr      the heatmap (H, W) in [0, 1] (1 = the slide's peak), OME-Zarr, µm-scaled
<target>.png           the heatmap alone          <target>-overlay.png   over the thumbnail
<target>.geojson       the post-processed region as QuPath annotations, level-0 pixels
<out>/heatmaps.parquet a row per slide and target: prediction, peak, mass, region, Jaccard, or why it failed
```

A cross-validated run explains each slide with the fold model that never saw it (as `evaluate`
does), and slides no fold tested with the fold models averaged. A slide that fails writes
nothing but its row's reason.

Example::

    table = heatmaps("runs/brca", "brca.zarr", "heatmaps/", target="grade", masks="masks/")
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import tifffile
from PIL import Image

from nic_ray.errors import NicError
from nic_ray.explain.cam import Target, grid_heatmap
from nic_ray.explain.exports import (
    CellGeometry,
    heatmap_png,
    overlay_png,
    region_geojson,
    write_json,
    write_ome_zarr,
)
from nic_ray.explain.options import HeatmapOptions
from nic_ray.explain.regions import heatmap_region, jaccard, mask_on_grid
from nic_ray.options import split_options
from nic_ray.progress import Progress
from nic_ray.runtime.run_files import RunError
from nic_ray.slides import level0_geometry, open_slide, tile_grid
from nic_ray.store import Store
from nic_ray.tables import write_bytes
from nic_ray.train.labels import Task
from nic_ray.train.nic_cnn import NICNet
from nic_ray.train.prediction import chosen_slides, model_outputs, model_tasks, prediction_columns, run_models

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def parse_target(text: str | None, tasks: list[Task]) -> list[tuple[str, Target]]:
    """``TASK[:CLASS]`` (CLASS ``*``: each class) → (name, Target) pairs; None: the first task.
    A multiclass task without a class explains the class each slide is predicted."""
    task_name, _, wanted = (text or tasks[0].name).partition(":")
    task = next((t for t in tasks if t.name == task_name), None)
    if task is None:
        raise RunError(f"--target {text}: no task {task_name!r} in the run (it has {', '.join(t.name for t in tasks)})")
    if task.type != "multiclass":
        if wanted:
            raise RunError(f"--target {text}: {task.name} is {task.type}; classes are for multiclass tasks")
        return [(task.name, Target(task.name, 0))]
    classes = [str(c) for c in task.classes]
    if wanted == "*":
        return [(f"{task.name}-{c}", Target(task.name, i)) for i, c in enumerate(classes)]
    if wanted and wanted not in classes:
        raise RunError(f"--target {text}: no class {wanted!r} in {task.name} (its classes: {', '.join(classes)})")
    index = classes.index(wanted) if wanted else None
    return [(f"{task.name}-{wanted}" if wanted else task.name, Target(task.name, index))]


def _models_for(slide_id: str, models: dict[str, tuple[NICNet, dict]], splits: dict) -> list[tuple[NICNet, dict]]:
    if list(models) != ["single"]:
        for part, model in models.items():
            if slide_id in splits[part]["test"]:
                return [model]
    return list(models.values())


def _geometry(info: dict) -> CellGeometry:
    level0 = info.get("level0")
    if level0 is None:  # a store written before slides recorded it: ask the slide
        with open_slide(info["source"]) as slide:
            level0 = level0_geometry(slide, tile_grid(slide, info["mpp"], info["patch_size"], info["stride"]))
    return CellGeometry(info["stride"] * level0["downsample"], level0["mpp"], tuple(level0["size"]))


def _read_mask(masks: str, slide_id: str) -> np.ndarray | None:
    for suffix in MASK_SUFFIXES:
        path = Path(masks) / f"{slide_id}{suffix}"
        if path.exists():
            if suffix == ".npy":
                return np.load(path, allow_pickle=False)
            return tifffile.imread(path) if suffix != ".png" else np.asarray(Image.open(path))
    return None


def _one(
    store: Store,
    slide_id: str,
    used: list[tuple[NICNet, dict]],
    task: Task,
    name: str,
    target: Target,
    options: HeatmapOptions,
    masks: str | None,
    out: str,
) -> dict:
    """Compute everything for one slide and target, then write it; the table row."""
    info = store.slide_info(slide_id)
    geometry = _geometry(info)
    outputs = [model_outputs(net, cfg, store, [slide_id], options.crops, options.views) for net, cfg in used]
    mean = {task.name: np.mean([o[task.name] for o in outputs], axis=0)}
    row = {"slide_id": slide_id, "target": name, "predicted_class": None}
    if task.type == "multiclass":
        predicted = int(mean[task.name][0].argmax())
        row["predicted_class"] = str(task.classes[predicted])
        target = Target(target.task, predicted if target.index is None else target.index)
        row["prediction"] = float(prediction_columns([task], mean)[f"{task.name}_{task.classes[target.index]}"][0])
    else:
        row["prediction"] = float(prediction_columns([task], mean)[task.name][0])
    grid = store.embeddings(slide_id)  # lazily: crops read one at a time
    tissue = store.read_tissue(slide_id) >= info.get("tissue_threshold", 26)
    raw = grid_heatmap([net for net, _ in used], grid, target, used[0][1]["crop_size"], options.views)
    raw[~tissue] = 0
    peak = float(raw.max())
    heatmap = raw / peak if peak > 0 else raw
    region = heatmap_region(heatmap, tissue, options)
    mask = _read_mask(masks, slide_id) if masks else None
    row |= {
        "status": "complete",
        "reason": "",
        "peak": peak,
        "mass": float(heatmap[tissue].mean()) if tissue.any() else 0.0,
        "region_cells": int(region.sum()),
        "region_um2": float(region.sum() * geometry.cell_um**2),
        "jaccard": jaccard(region, mask_on_grid(mask, heatmap.shape, geometry.cell_px))
        if mask is not None
        else float("nan"),
    }
    title = f"{slide_id}: {name} (prediction {row['prediction']:.3g})"
    files = {
        f"{name}.png": heatmap_png(heatmap, tissue),
        f"{name}-overlay.png": overlay_png(heatmap, tissue, store.read_thumbnail(slide_id), geometry, title),
    }
    base = f"{out.rstrip('/')}/{slide_id}"
    for file, data in files.items():
        write_bytes(f"{base}/{file}", data)
    write_json(f"{base}/{name}.geojson", region_geojson(region, geometry, f"Grad-CAM {name}"))
    write_ome_zarr(f"{base}/{name}.ome.zarr", heatmap, geometry, f"{slide_id} Grad-CAM {name}")
    return row


def heatmaps(
    run: str,
    store: str,
    out: str,
    slides: str | None = None,
    target: str | None = None,
    masks: str | None = None,
    **options,
) -> pa.Table:
    """Grad-CAM heatmaps of ``run`` for the complete slides of ``store`` (or those of the
    ``slides`` table), explained ``target`` (``TASK[:CLASS]``), into ``out``; masks (``masks``
    folder: ``<slide_id>.png|.tif|.npy`` at slide or grid resolution) give each a Jaccard.
    ``options`` are `HeatmapOptions`. Returns the table written to ``<out>/heatmaps.parquet``."""
    (opts,) = split_options(options, HeatmapOptions)
    source = Store.open(store)
    files, models = run_models(run, source)
    tasks = model_tasks(next(iter(models.values()))[1])
    targets = parse_target(target, tasks)
    slide_ids, _ = chosen_slides(slides, source)
    if masks is not None and not os.path.isdir(masks):
        raise NicError(f"--masks {masks}: not a folder of <slide_id>.png|.tif|.npy masks")
    splits = files.read_json("run.json")["splits"]
    rows = []
    for slide_id in Progress(slide_ids, desc="heatmaps", unit="slide"):
        used = _models_for(slide_id, models, splits)
        for name, wanted in targets:
            task = next(t for t in tasks if t.name == wanted.task)
            try:
                rows.append(_one(source, slide_id, used, task, name, wanted, opts, masks, out))
            except (NicError, OSError, ValueError) as e:
                rows.append({"slide_id": slide_id, "target": name, "status": "failed", "reason": str(e)})
    columns = {
        "slide_id": pa.string(),
        "target": pa.string(),
        "status": pa.string(),
        "reason": pa.string(),
        "prediction": pa.float64(),
        "predicted_class": pa.string(),
        "peak": pa.float64(),
        "mass": pa.float64(),
        "region_cells": pa.int64(),
        "region_um2": pa.float64(),
        "jaccard": pa.float64(),
    }
    result = pa.Table.from_pylist(rows, schema=pa.schema(columns))
    buffer = io.BytesIO()
    pyarrow.parquet.write_table(result, buffer)
    write_bytes(f"{out.rstrip('/')}/heatmaps.parquet", buffer.getvalue())
    return result
