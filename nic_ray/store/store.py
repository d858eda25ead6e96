"""The store: one Zarr v3 group of compressed slides (docs/design.md, "Store format", a contract).

```
<store>/                       attrs["nic"]: format_version, encoder, stride, orientations
<store>/slides/<slide_id>/     attrs["slide"]: source, identity, level, mpp, grid, …, status
    embeddings  float16 (O, C, H, W), chunks (1, C, h, w)
    tissue      uint8 (H, W), tissue fraction of each cell, 0..255
    thumbnail   uint8 (h, w, 3)
<store>/runs/                  run reports and per-slide claims (not grids)
```

A slide's ``status`` becomes ``"complete"`` only after all of its blocks are written, and is
written last. Blocks are whole chunks, so concurrent writers never share a chunk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec

from nic_ray.errors import StoreError
from nic_ray.store.grid_reader import GridReader

FORMAT_VERSION = 1
CHUNK = 32  # grid cells per chunk side: a block of work is one chunk of one slide
# Codes compress little whatever the codec, but training reads every chunk a crop touches: lz4
# still squeezes the zeros of background cells and decodes far faster than zarr's default zstd
# (benchmarks/store_codecs.py).
EMBEDDINGS_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@dataclass(frozen=True)
class StoreConfig:
    """What every grid in a store shares; compressing with another one is refused."""

    encoder: dict  # name, sha256, code_size, patch_size, mpp
    stride: int
    orientations: int

    def describe(self) -> str:
        e = self.encoder
        return (
            f"encoder {e['name']} (sha256 {e['sha256'][:12]}, C={e['code_size']}, P={e['patch_size']}, "
            f"{e['mpp']} µm/px), stride {self.stride}, {self.orientations} orientation(s)"
        )


class Store:
    """A store of compressed slides, local path or ``s3://`` URL.

    Example::

        store = Store.open("brca.zarr")
        store.complete_slides()  # ['TCGA-A1-A0SB', ...]
        grid = store.read_embeddings("TCGA-A1-A0SB")  # (O, C, H, W) float16
    """

    def __init__(self, url: str, group: zarr.Group):
        self.url = url
        self._group = group
        attrs = group.attrs.get("nic")
        if not isinstance(attrs, dict) or "encoder" not in attrs:
            raise StoreError(f"{url}: not a nic-ray store (no 'nic' attributes)")
        self.config = StoreConfig(attrs["encoder"], attrs["stride"], attrs["orientations"])

    @classmethod
    def open(cls, url: str | os.PathLike, mode: str = "r") -> Store:
        url = str(url)
        try:
            return cls(url, zarr.open_group(store=url, mode=mode))
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            raise StoreError(f"{url}: no store there") from None

    @classmethod
    def create_or_open(cls, url: str | os.PathLike, config: StoreConfig) -> Store:
        """The store at ``url``, created if absent; refused if it holds another configuration."""
        url = str(url)
        attributes = {"nic": {"format_version": FORMAT_VERSION, **asdict(config)}}
        try:
            # A new group is written with its attributes at once: runs that start together on
            # one store never see it without them.
            group = zarr.open_group(store=url, mode="a", attributes=attributes)
        except zarr.errors.ContainsArrayError:
            raise StoreError(f"{url}: holds a Zarr array, not a nic-ray store") from None
        if "nic" not in group.attrs:
            if list(group.keys()):
                raise StoreError(f"{url}: a Zarr group that is not a nic-ray store; choose an empty location")
            group.attrs.update(attributes)
        # Whichever of two concurrent runs gets here first lays these out; both find them after.
        group.require_group("slides")
        group.require_group("runs")
        store = cls(url, group)
        if store.config != config:
            raise StoreError(
                f"{url}: built with {store.config.describe()}, not {config.describe()}; use another --store"
            )
        return store

    # Reading -----------------------------------------------------------------------------

    def slide_ids(self) -> list[str]:
        return sorted(self._group["slides"].group_keys())

    def slide_info(self, slide_id: str) -> dict:
        """The ``slide`` attributes of ``slide_id`` (status, grid, source, timings…)."""
        try:
            return dict(self._group[f"slides/{slide_id}"].attrs["slide"])
        except KeyError:
            raise StoreError(f"{self.url}: no slide {slide_id!r}") from None

    def slide_info_or_none(self, slide_id: str) -> dict:
        """Like `slide_info`, but {} for a slide not in the store."""
        try:
            return self.slide_info(slide_id)
        except StoreError:
            return {}

    def slides(self) -> dict[str, dict]:
        out = {}
        for slide_id, group in self._group["slides"].groups():
            out[slide_id] = dict(group.attrs.get("slide", {"status": "incomplete"}))
        return dict(sorted(out.items()))

    def complete_slides(self) -> list[str]:
        return [s for s, info in self.slides().items() if info.get("status") == "complete"]

    def _slide(self, slide_id: str) -> zarr.Group:
        if self.slide_info(slide_id).get("status") != "complete":
            raise StoreError(f"{self.url}: slide {slide_id!r} is not complete")
        return self._group[f"slides/{slide_id}"]

    def embeddings(self, slide_id: str) -> zarr.Array:
        """The slide's (O, C, H, W) float16 array, lazily: slicing it reads only the chunks touched."""
        return self._slide(slide_id)["embeddings"]

    def read_embeddings(self, slide_id: str, orientation: int | None = None) -> np.ndarray:
        """float16 (O, C, H, W), or (C, H, W) for one ``orientation``."""
        array = self.embeddings(slide_id)
        return array[:] if orientation is None else array[orientation]

    def read_tissue(self, slide_id: str) -> np.ndarray:
        return self._slide(slide_id)["tissue"][:]

    def read_thumbnail(self, slide_id: str) -> np.ndarray:
        """uint8 (h, w, 3): the whole slide, small, for overlays."""
        return self._slide(slide_id)["thumbnail"][:]

    def grid(self, slide_id: str) -> tuple[GridReader, np.ndarray]:
        """(embeddings reader, tissue) of a complete slide, its metadata read once: what crops need."""
        group = self._slide(slide_id)
        return GridReader(group["embeddings"]), group["tissue"][:]

    def to_xarray(self, slide_id: str):
        """The slide's arrays as an ``xarray.Dataset`` (lazy)."""
        import xarray

        self._slide(slide_id)
        return xarray.open_zarr(self.url, group=f"slides/{slide_id}", consolidated=False)

    # Writing (the run that owns a slide) ---------------------------------------------------

    def create_slide(self, slide_id: str, info: dict, tissue: np.ndarray, thumbnail: np.ndarray) -> None:
        """Start ``slide_id`` afresh: whatever was there is removed, arrays are laid out empty."""
        slides = self._group["slides"]
        if slide_id in slides:
            del slides[slide_id]
        group = slides.create_group(slide_id)
        H, W = tissue.shape
        e = self.config.encoder
        group.create_array(
            "embeddings",
            shape=(self.config.orientations, e["code_size"], H, W),
            dtype="float16",
            chunks=(1, e["code_size"], CHUNK, CHUNK),
            fill_value=0,
            dimension_names=("o", "c", "y", "x"),
            compressors=EMBEDDINGS_CODEC,
        )
        group.create_array("tissue", data=tissue, chunks=(CHUNK * 4, CHUNK * 4), dimension_names=("y", "x"))
        group.create_array("thumbnail", data=thumbnail, chunks=(512, 512, 3), dimension_names=("ty", "tx", "rgb"))
        group.attrs["slide"] = {**info, "grid": [H, W], "status": "incomplete"}

    def mark_complete(self, slide_id: str, **extra) -> None:
        group = self._group[f"slides/{slide_id}"]
        group.attrs["slide"] = {**group.attrs["slide"], **extra, "status": "complete"}


def block_origins(tissue: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    """(y0, x0) of each chunk of the grid holding at least one tissue cell."""
    H, W = tissue.shape
    return [
        (y0, x0)
        for y0 in range(0, H, CHUNK)
        for x0 in range(0, W, CHUNK)
        if (tissue[y0 : y0 + CHUNK, x0 : x0 + CHUNK] >= threshold).any()
    ]


@lru_cache(maxsize=16)
def _embeddings_array(url: str, slide_id: str, shape: tuple[int, ...]) -> zarr.Array:
    # Keyed by shape too: a slide recreated with another grid gets a fresh handle.
    return zarr.open_array(store=url, path=f"slides/{slide_id}/embeddings", mode="r+")


def write_block(url: str, slide_id: str, shape: tuple[int, ...], y0: int, x0: int, block: np.ndarray) -> None:
    """Write one whole chunk (O, C, h, w) at grid (y0, x0); (y0, x0) are chunk-aligned."""
    assert y0 % CHUNK == 0 and x0 % CHUNK == 0, "blocks must be chunk-aligned"
    array = _embeddings_array(url, slide_id, shape)
    array[:, :, y0 : y0 + block.shape[2], x0 : x0 + block.shape[3]] = block
