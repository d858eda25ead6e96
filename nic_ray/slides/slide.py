"""Opening a whole-slide image, local or remote, and reading its pixels.

Every format OpenSlide reads opens here. Levels stored as tiled TIFF pages (Aperio SVS,
generic pyramidal TIFF) are read by the fast tile path (`TiledPage`); other formats by
OpenSlide's ``read_region``. Both give identical pixels; outside the image both give white.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import tifffile

from nic_ray.errors import SlideError
from nic_ray.slides.cache import SlideCache, is_remote, source_identity
from nic_ray.slides.tiff_tiles import Target, TiledPage

# Vendors whose levels are plain tiled TIFF pages that OpenSlide composes without overlap.
_FAST_VENDORS = {"aperio", "generic-tiff"}


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    downsample: float
    mpp: float


class Slide:
    """A whole-slide image open for reading. Use `open_slide` to make one.

    Example::

        with open_slide("slide.svs") as slide:
            rgb = slide.read_region(level=0, x=0, y=0, width=256, height=256)
    """

    def __init__(
        self,
        source: str,
        path: str,
        identity: dict,
        mpp: float | None,
        backend: str,
        release: Callable[[], None] | None = None,
    ):
        self.source = source
        self._release = release
        self.path = path
        self.identity = identity
        self._pages: dict[int, TiledPage] = {}
        self._tiff: tifffile.TiffFile | None = None
        try:
            self._osr = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(source, "not a slide format OpenSlide can read") from None
        except openslide.OpenSlideError as e:
            raise SlideError(source, f"corrupt slide: {e}") from None
        try:
            self.vendor = self._osr.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown")
            self.mpp = mpp if mpp is not None else self._file_mpp()
            self.levels = tuple(
                Level(w, h, ds, self.mpp * ds)
                for (w, h), ds in zip(self._osr.level_dimensions, self._osr.level_downsamples)
            )
            if backend == "auto" and self.vendor in _FAST_VENDORS:
                self._open_fast_pages()
        except BaseException:
            self.close()
            raise

    def _file_mpp(self) -> float:
        props = self._osr.properties
        try:
            x = float(props[openslide.PROPERTY_NAME_MPP_X])
            y = float(props.get(openslide.PROPERTY_NAME_MPP_Y, x))
        except (KeyError, ValueError):
            raise SlideError(self.source, "no µm/px in the file; give this slide an mpp override") from None
        return (x + y) / 2

    def _open_fast_pages(self) -> None:
        self._tiff = tifffile.TiffFile(self.path)
        pages = [p for p in self._tiff.pages if TiledPage.supports(p)]
        size = os.path.getsize(self.path)
        for i, level in enumerate(self.levels):
            page = next(
                (p for p in pages if (p.imagewidth, p.imagelength) == (level.width, level.height)),
                None,
            )
            if page is None:
                continue
            fast = TiledPage(self.path, page)
            self._pages[i] = fast
            if fast.data_end > size:
                raise SlideError(
                    self.source,
                    f"truncated: the file has {size} bytes, level {i} needs {fast.data_end}",
                )

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.levels[0].width, self.levels[0].height

    @property
    def fast_levels(self) -> tuple[int, ...]:
        """The levels read by the fast tile path rather than OpenSlide."""
        return tuple(sorted(self._pages))

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB pixels (height, width, 3) uint8 of ``level``, in that level's coordinates.

        Pixels outside the image are white.
        """
        lv = self.levels[level]
        if level in self._pages:
            target = Target(y, x, height, width)
            self.read_targets(level, [target])
            return target.pixels
        try:
            rgba = np.asarray(
                self._osr.read_region((round(x * lv.downsample), round(y * lv.downsample)), level, (width, height))
            )
        except (openslide.OpenSlideError, OSError, ValueError, RuntimeError) as e:
            # After one bad tile an OpenSlide handle can stay broken.
            self._osr.close()
            self._osr = openslide.OpenSlide(self.path)
            raise SlideError(self.source, f"cannot read level {level} at x={x}, y={y}: {e}") from None
        pixels = rgba[..., :3].copy()
        pixels[rgba[..., 3] == 0] = 255
        return pixels

    def read_targets(
        self, level: int, targets: Sequence[Target], pool: Executor | None = None, threads: int = 1
    ) -> None:
        """Fill ``targets`` from the tiles of ``level``, one of `fast_levels` (`TiledPage.fill`)."""
        try:
            self._pages[level].fill(targets, pool, threads)
        except OSError as e:
            raise SlideError(self.source, f"cannot read level {level} {e}") from None

    def close(self) -> None:
        for page in self._pages.values():
            page.close()
        self._pages.clear()
        if self._tiff is not None:
            self._tiff.close()
        if getattr(self, "_osr", None) is not None:
            self._osr.close()
            self._osr = None
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({self.source!r}, {w}x{h}, {self.mpp:.4g} µm/px, {len(self.levels)} levels)"


def open_slide(
    source: str | os.PathLike,
    *,
    mpp: float | None = None,
    backend: str = "auto",
    cache: SlideCache | None = None,
) -> Slide:
    """Open a slide from a local path or a remote URL (``s3://…``).

    Remote slides are downloaded whole into ``cache`` (a bounded local cache; one per node by
    default), since OpenSlide reads local files only. ``mpp`` overrides the file's µm/px;
    ``backend="openslide"`` turns the fast tile path off.

    Raises `SlideError`, naming the slide, if it is missing, empty, truncated, not a slide,
    or has no µm/px and no override.
    """
    if backend not in ("auto", "openslide"):
        raise ValueError(f"backend must be 'auto' or 'openslide', not {backend!r}")
    source = str(source)
    release = None
    if is_remote(source):
        cached = (cache or SlideCache.default()).fetch(source)
        path, identity, release = cached.path, cached.identity, cached.release
    else:
        path = source
        identity = source_identity(path)
        if Path(path).is_dir():
            raise SlideError(source, "is a directory, not a slide file")
    try:
        if identity["size"] == 0:
            raise SlideError(source, "empty file (0 bytes)")
        return Slide(source, path, identity, mpp, backend, release)
    except BaseException:
        if release is not None:
            release()
        raise
