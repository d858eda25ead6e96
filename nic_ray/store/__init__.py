"""The store of compressed slides (a Zarr v3 group, local or s3://): its format, the grid
reader crops use, per-slide claims of concurrent runs, and compression run reports."""

from nic_ray.errors import StoreError
from nic_ray.store.store import CHUNK, Store, StoreConfig, block_origins, write_block

__all__ = ["CHUNK", "Store", "StoreConfig", "StoreError", "block_origins", "write_block"]
