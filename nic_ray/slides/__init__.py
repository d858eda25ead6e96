"""Slides: opening (local, s3://), level choice by µm/px, tile grids, tissue, synthetic slides."""

from nic_ray.slides.cache import SlideCache
from nic_ray.slides.cells import read_cells
from nic_ray.slides.grid import TileGrid, read_target_region, tile_grid
from nic_ray.slides.resolution import LevelChoice, choose_level
from nic_ray.slides.slide import Level, Slide, open_slide
from nic_ray.slides.tissue import read_thumbnail, tissue_fraction, tissue_mask

__all__ = [
    "Level",
    "LevelChoice",
    "Slide",
    "SlideCache",
    "TileGrid",
    "choose_level",
    "open_slide",
    "read_cells",
    "read_target_region",
    "read_thumbnail",
    "tile_grid",
    "tissue_fraction",
    "tissue_mask",
]
