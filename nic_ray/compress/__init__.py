"""Compression: slides → Ray Data → encoder actor pools → a store, resumable, local or S3."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CompressOptions": "nic_ray.compress.options",
        "CompressResult": "nic_ray.compress.pipeline",
        "compress": "nic_ray.compress.pipeline",
    },
)
