"""Compression: slides → Ray Data → encoder actor pools → a Zarr store, resumable, local or S3."""

from nic_ray.compress.pipeline import CompressResult, compress
from nic_ray.compress.sources import SlideSource, expand_sources
from nic_ray.compress.store import Store, StoreConfig, StoreError

__all__ = ["CompressResult", "SlideSource", "Store", "StoreConfig", "StoreError", "compress", "expand_sources"]
