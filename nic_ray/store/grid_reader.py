"""Windows of a slide's embeddings, read chunk by chunk and decoded straight into their place.

zarr's own slicing hops between threads twice per chunk (fetch, decode) and copies out of a
fresh temporary; a 400² training crop touches ~170 chunks, and that was most of a crop loader's
time. Here a window's chunks are fetched through the array's own store (the abstraction zarr
itself reads with), then decoded one by one in the calling thread into a reused buffer and copied
into the caller's array. Stores that read synchronously (local files) are read in this thread,
several times faster than a thread per key; others (``s3://``) concurrently (benchmarks/train.py).
"""

from __future__ import annotations

import asyncio

import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from zarr.abc.store import SupportsGetSync
from zarr.core.buffer import Buffer
from zarr.core.sync import sync

from nic_ray.errors import StoreError


def _copy(raw: np.ndarray, out: np.ndarray) -> None:
    out.reshape(-1).view(np.uint8)[:] = raw


# Compressor name (None: uncompressed) → decode(raw bytes, out): those nic-ray has written
# embeddings with (zstd: zarr's default, stores before lz4) and none. Blosc and zstd frames are
# self-describing, so decoding needs none of the writer's settings.
_DECODERS = {"blosc": Blosc().decode, "zstd": Zstd().decode, None: _copy}
_LITTLE_ENDIAN = {"name": "bytes", "configuration": {"endian": "little"}}


class GridReader:
    """A slide's (O, C, H, W) embeddings; `read_into` fills an array with a window of them.

    Arrays compressed otherwise than nic-ray writes them are read with zarr's slicing, the same
    values, more slowly.

    Example::

        reader = GridReader(Store.open("brca.zarr").embeddings("TCGA-A1-A0SB"))
        window = np.empty((reader.shape[1], 64, 64), np.float16)
        reader.read_into(window, orientation=0, y0=10, x0=20)
    """

    def __init__(self, array: zarr.Array):
        self.array = array
        self.shape: tuple[int, ...] = array.shape
        first, *compressor = [codec.to_dict() for codec in array.metadata.codecs]
        name = compressor[0]["name"] if compressor else None
        known = first == _LITTLE_ENDIAN and len(compressor) <= 1 and name in _DECODERS
        self._decode = _DECODERS[name] if known and array.dtype == np.float16 else None

    def read_into(self, out: np.ndarray, orientation: int, y0: int, x0: int) -> None:
        """``out`` (C, h, w), of any strides ← embeddings[orientation, :, y0 : y0 + h, x0 : x0 + w].

        The window lies inside the grid. Chunks never written (background) read as the fill value.
        """
        _, h, w = out.shape
        if self._decode is None:
            out[...] = self.array[orientation, :, y0 : y0 + h, x0 : x0 + w]
            return
        _, _, ch, cw = self.array.chunks
        cells = [
            (cy, cx) for cy in range(y0 // ch, (y0 + h - 1) // ch + 1) for cx in range(x0 // cw, (x0 + w - 1) // cw + 1)
        ]
        blobs = self._fetch([(orientation, 0, cy, cx) for cy, cx in cells])
        chunk = np.empty(self.array.chunks[1:], self.array.dtype)  # (C, h, w), each chunk decoded into it
        for (cy, cx), blob in zip(cells, blobs):
            top, left = cy * ch, cx * cw
            ya, yb, xa, xb = max(top, y0), min(top + ch, y0 + h), max(left, x0), min(left + cw, x0 + w)
            target = out[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
            if blob is None:
                target[...] = self.array.fill_value
            else:
                try:
                    self._decode(blob.as_numpy_array(), chunk)
                except (RuntimeError, ValueError) as error:
                    raise StoreError(
                        f"{self.array.store_path}: chunk {(orientation, 0, cy, cx)} is corrupt ({error}); "
                        "compress its slide again with --overwrite"
                    ) from None
                target[...] = chunk[:, ya - top : yb - top, xa - left : xb - left]

    def _fetch(self, chunks: list[tuple[int, ...]]) -> list[Buffer | None]:
        paths = [self.array.store_path / self.array.metadata.encode_chunk_key(c) for c in chunks]
        if isinstance(self.array.store_path.store, SupportsGetSync):
            return [path.get_sync() for path in paths]

        async def fetch_all() -> list[Buffer | None]:
            return await asyncio.gather(*(path.get() for path in paths))

        return sync(fetch_all())
