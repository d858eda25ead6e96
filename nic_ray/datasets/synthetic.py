"""Synthetic slides that OpenSlide opens with every level and the right µm/px.

A *painter* gives the pixels of any region of any level, so slides far larger than memory are
written tile by tile. Two layouts: generic pyramidal TIFF (levels as separate IFDs marked as
reduced images, resolution tags for µm/px) and Aperio-like SVS (``Aperio`` ImageDescription
with ``MPP``, JPEG tiles).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import tifffile

from nic_ray.slides.resample import box_downsample


class Painter(Protocol):
    """Pixels of a synthetic slide: ``width`` × ``height`` at level 0."""

    width: int
    height: int

    def __call__(self, x: int, y: int, width: int, height: int, downsample: int) -> np.ndarray:
        """RGB (height, width, 3) uint8 of the level shrunk by ``downsample``, its coordinates."""
        ...


class ArrayPainter:
    """Paints an in-memory image; reduced levels are its exact box means."""

    def __init__(self, image: np.ndarray):
        self.height, self.width = image.shape[:2]
        self._levels = {1: image}

    def __call__(self, x: int, y: int, width: int, height: int, downsample: int) -> np.ndarray:
        if downsample not in self._levels:
            h, w = (math.ceil(n / downsample) * downsample for n in (self.height, self.width))
            padded = np.full((h, w, 3), 255, np.uint8)
            padded[: self.height, : self.width] = self._levels[1]
            self._levels[downsample] = box_downsample(padded, downsample)
        out = np.full((height, width, 3), 255, np.uint8)
        part = self._levels[downsample][y : y + height, x : x + width]
        out[: part.shape[0], : part.shape[1]] = part
        return out


def _hash(xx: np.ndarray, yy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per-pixel noise in 0..255, the same whichever tile asks."""
    h = xx.astype(np.uint32) * np.uint32(0x9E3779B1) ^ yy.astype(np.uint32) * np.uint32(0x85EBCA77)
    h ^= np.uint32(seed * 0x27D4EB2F & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    return (h & np.uint32(0xFF)).astype(np.int32)


class TissuePainter:
    """H&E-like tissue: smooth blobs covering about ``tissue`` of the slide, with nuclei.

    >>> painter = TissuePainter(16384, 16384, tissue=0.5, seed=1)
    >>> region = painter(0, 0, 256, 256, 1)
    >>> region.shape, bool((region == painter(0, 0, 256, 256, 1)).all())  # the same pixels each time
    ((256, 256, 3), True)
    """

    _CELL = 512  # level-0 pixels per cell of the blob field

    def __init__(self, width: int, height: int, tissue: float = 0.5, seed: int = 0):
        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng(seed)
        field = rng.normal(size=(height // self._CELL + 3, width // self._CELL + 3))
        for _ in range(3):  # a few box blurs: blobs several cells wide
            field = (field + np.roll(field, 1, 0) + np.roll(field, -1, 0)) / 3
            field = (field + np.roll(field, 1, 1) + np.roll(field, -1, 1)) / 3
        self._field = field
        self._threshold = np.quantile(field, 1 - tissue)

    def __call__(self, x: int, y: int, width: int, height: int, downsample: int) -> np.ndarray:
        ys = (np.arange(y, y + height) + 0.5) * downsample
        xs = (np.arange(x, x + width) + 0.5) * downsample
        fy, fx = ys / self._CELL, xs / self._CELL
        # Edge tiles reach past the image: hold the field's last cells there.
        iy = np.minimum(fy.astype(int), self._field.shape[0] - 2)
        ix = np.minimum(fx.astype(int), self._field.shape[1] - 2)
        ty, tx = (fy - iy)[:, None], (fx - ix)[None, :]
        f = self._field
        value = (
            f[iy][:, ix] * (1 - ty) * (1 - tx)
            + f[iy + 1][:, ix] * ty * (1 - tx)
            + f[iy][:, ix + 1] * (1 - ty) * tx
            + f[iy + 1][:, ix + 1] * ty * tx
        )
        tissue = value > self._threshold
        yy, xx = np.meshgrid(ys.astype(np.int64), xs.astype(np.int64), indexing="ij")
        nuclei = _hash(xx // 6, yy // 6, self.seed) < 40  # dark purple specks, 6 px wide
        grain = _hash(xx, yy, self.seed + 1)[..., None] // 16 - 8
        eosin = np.array([232, 150, 190]) + grain
        haema = np.array([95, 60, 150]) + grain
        glass = np.array([243, 243, 241]) + grain // 4
        rgb = np.where(tissue[..., None], np.where(nuclei[..., None], haema, eosin), glass)
        return np.clip(rgb, 0, 255).astype(np.uint8)


def write_slide(
    path: str | os.PathLike,
    painter: Painter | np.ndarray,
    mpp: float | None,
    *,
    format: str = "tiff",
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4, 16),
    compression: str = "jpeg",
    quality: int = 90,
) -> str:
    """Write a pyramidal slide of ``painter`` (or an RGB array) at ``mpp`` µm/px at level 0.

    ``format`` is ``"tiff"`` (generic pyramidal TIFF, any ``compression``) or ``"svs"``
    (Aperio-like, JPEG). ``mpp=None`` writes a slide without µm/px. Returns the path.

    Example::

        write_slide("case.svs", TissuePainter(4096, 4096), 0.25, format="svs")
    """
    if isinstance(painter, np.ndarray):
        painter = ArrayPainter(painter)
    if format not in ("tiff", "svs"):
        raise ValueError(f"format must be 'tiff' or 'svs', not {format!r}")
    if format == "svs" and (compression != "jpeg" or mpp is None):
        raise ValueError("an Aperio-like slide has JPEG tiles and a µm/px")
    W, H = painter.width, painter.height
    codec = {"jpeg": "jpeg", "zlib": "zlib", "none": None}[compression]
    with tifffile.TiffWriter(path, bigtiff=W * H * 3 > 2**31) as tw:
        for i, ds in enumerate(downsamples):
            w, h = math.ceil(W / ds), math.ceil(H / ds)
            options = dict(
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=codec,
                compressionargs={"level": quality} if codec == "jpeg" else None,
                metadata=None,
            )
            if format == "svs":
                head = f"Aperio Image Library v12.0.0\r\n{W}x{H} "
                head += f"[0,0 {W}x{H}] ({tile}x{tile}) JPEG/RGB Q={quality}" if i == 0 else f"-> {w}x{h} - "
                options["description"] = f"{head}|AppMag = {10 / mpp:.3g}|MPP = {mpp}"
            else:
                options["subfiletype"] = 1 if i else 0
                if mpp is not None:
                    res = 1e4 / (mpp * ds)  # pixels per centimetre
                    options.update(resolution=(res, res), resolutionunit="CENTIMETER")
                else:
                    options.update(resolution=None, resolutionunit="NONE")
            tw.write(_tiles(painter, ds, w, h, tile), **options)
    return str(path)


def _tiles(painter: Painter, ds: int, width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield painter(x, y, tile, tile, ds)
