"""How heatmaps are made and post-processed (`HeatmapOptions`, `RegionOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option


@dataclass
class RegionOptions:
    """How a heatmap becomes a region."""

    sigma: float = option(1.0, "Gaussian smoothing of the heatmap, in cells (0: none)")
    threshold: float = option(0.5, "share of the smoothed heatmap's peak over tissue that a cell must reach")
    min_cells: int = option(4, "smallest connected region kept, in cells")


@dataclass
class HeatmapOptions(RegionOptions):
    """How a run's heatmaps are made (and their regions drawn)."""

    views: int = option(8, "dihedral views of each crop, each map turned back", choices=range(1, 9), metavar="1..8")
    crops: int = option(10, "crops per slide for the prediction reported beside the heatmap")
