"""Slides: opening (local, s3://), level choice by µm/px, tile grids, tissue, lists of slides."""

from nic_ray.slides.cache import SlideCache
from nic_ray.slides.cells import read_cells
from nic_ray.slides.grid import TileGrid, level0_geometry, read_target_region, tile_grid
from nic_ray.slides.open_slides import OpenSlides
from nic_ray.slides.resolution import LevelChoice, choose_level
from nic_ray.slides.slide import Level, Slide, open_slide
from nic_ray.slides.sources import SlideSource, expand_sources
from nic_ray.slides.tissue import read_thumbnail, tissue_fraction, tissue_mask

__all__ = [
    "Level",
    "LevelChoice",
    "OpenSlides",
    "Slide",
    "SlideCache",
    "SlideSource",
    "TileGrid",
    "choose_level",
    "expand_sources",
    "level0_geometry",
    "open_slide",
    "read_cells",
    "read_target_region",
    "read_thumbnail",
    "tile_grid",
    "tissue_fraction",
    "tissue_mask",
]
