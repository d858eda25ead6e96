"""Heatmaps where pathologists look: OME-Zarr for viewers (napari, vizarr, QuPath), GeoJSON
annotations in level-0 pixels for QuPath, and PNGs (over the slide's thumbnail, and alone).

Grid cell (y, x) covers level-0 pixels [y·c, (y+1)·c) × [x·c, (x+1)·c), c = stride × the
compression level's downsample (`CellGeometry`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt
import numpy as np
import shapely
import zarr
from PIL import Image

from nic_ray.tables import write_bytes

COLOURS = "magma"  # perceptually uniform, dark where the model did not look


@dataclass(frozen=True)
class CellGeometry:
    """Where a slide's grid cells lie: ``cell_px`` level-0 pixels a side, ``mpp`` µm a level-0
    pixel, the image ``size`` (height, width) in level-0 pixels."""

    cell_px: float
    mpp: float
    size: tuple[int, int]

    @property
    def cell_um(self) -> float:
        return self.cell_px * self.mpp


def write_ome_zarr(url: str, heatmap: np.ndarray, geometry: CellGeometry, name: str) -> None:
    """The heatmap (H, W) as OME-Zarr (NGFF 0.4, Zarr v2, which most viewers read): one scale
    level whose pixels are grid cells, sized in µm, so that it overlays the slide."""
    group = zarr.open_group(url, mode="w", zarr_format=2)
    group.create_array(
        "0", data=heatmap.astype(np.float32), chunks=(min(heatmap.shape[0], 512), min(heatmap.shape[1], 512))
    )
    axes = [{"name": axis, "type": "space", "unit": "micrometer"} for axis in ("y", "x")]
    scale = [{"type": "scale", "scale": [geometry.cell_um, geometry.cell_um]}]
    group.attrs["multiscales"] = [
        {"version": "0.4", "name": name, "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
    ]


def region_geojson(region: np.ndarray, geometry: CellGeometry, name: str) -> dict:
    """The region's cells as QuPath annotations: a GeoJSON FeatureCollection of polygons in
    level-0 pixel coordinates, one feature per connected part."""
    c = geometry.cell_px
    ys, xs = np.nonzero(region)
    shape = shapely.union_all(shapely.box(xs * c, ys * c, (xs + 1) * c, (ys + 1) * c)) if len(ys) else None
    parts = [] if shape is None else list(getattr(shape, "geoms", [shape]))
    properties = {
        "objectType": "annotation",
        "name": name,
        "classification": {"name": "Grad-CAM region", "color": [255, 64, 0]},
    }
    features = [{"type": "Feature", "geometry": shapely.geometry.mapping(p), "properties": properties} for p in parts]
    return {"type": "FeatureCollection", "features": features}


def heatmap_png(heatmap: np.ndarray, tissue: np.ndarray) -> bytes:
    """The heatmap alone, in `COLOURS`, cells enlarged to ~512 px a side, background clear."""
    rgba = (plt.get_cmap(COLOURS)(np.clip(heatmap, 0, 1)) * 255).astype(np.uint8)
    rgba[~tissue, 3] = 0
    k = max(1, 512 // max(heatmap.shape))
    buffer = io.BytesIO()
    Image.fromarray(np.kron(rgba, np.ones((k, k, 1), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(
    heatmap: np.ndarray, tissue: np.ndarray, thumbnail: np.ndarray, geometry: CellGeometry, title: str
) -> bytes:
    """The heatmap over the slide's thumbnail in level-0 pixel coordinates, with a colour bar and
    the tissue outline."""
    H, W = heatmap.shape
    height, width = geometry.size
    grid_extent = (0, W * geometry.cell_px, H * geometry.cell_px, 0)
    fig, ax = plt.subplots(figsize=(8, 8 * height / width + 0.6), dpi=100)
    ax.imshow(thumbnail, extent=(0, width, height, 0))
    shown = np.ma.masked_where(~tissue | (heatmap <= 0), heatmap)
    image = ax.imshow(shown, cmap=COLOURS, vmin=0, vmax=1, alpha=0.6, extent=grid_extent, interpolation="nearest")
    ax.contour(tissue.astype(float), levels=[0.5], colors="#2a9d8f", linewidths=1.0, extent=grid_extent, origin="upper")
    ax.set(xlim=(0, width), ylim=(height, 0), title=title, xlabel="level-0 x (px)", ylabel="level-0 y (px)")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="Grad-CAM (1 = the slide's peak)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_json(url: str, value: dict) -> None:
    write_bytes(url, json.dumps(value).encode())
