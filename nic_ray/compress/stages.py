"""The work of the compression dataset, each step mapping rows of plain numpy values.

    plan (task per slide) → read, encode, write (actor pool, a block per call: `encode`)

Nothing here imports torch: planning tasks start fast, only encoder actors load it.

A row is one block of work: a chunk of one slide's grid. A stage that meets a bad slide does
not raise (that would stop every other slide): it sets the row's ``error`` and the actor passes
the row on, so the driver can fail that slide alone.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nic_ray.errors import NicError
from nic_ray.slides import OpenSlides, level0_geometry, open_slide, read_cells, read_thumbnail, tile_grid
from nic_ray.slides.tissue import cell_fraction, default_mask_mpp, tissue_mask
from nic_ray.store import CHUNK, Store, block_origins, write_block


@dataclass(frozen=True)
class Settings:
    """What every stage needs to know about the run; travels to the workers."""

    store: str
    mpp: float
    patch_size: int
    stride: int
    orientations: int
    code_size: int
    tissue_threshold: int  # 0..255


def _row(
    slide_id: str,
    url: str,
    mpp: float,
    n_blocks: int,
    grid: tuple[int, int] = (0, 0),
    y0: int = -1,
    x0: int = -1,
    tissue: np.ndarray | None = None,
    error: str = "",
) -> dict:
    return {
        "slide_id": slide_id,
        "url": url,
        "mpp": mpp,
        "n_blocks": n_blocks,
        "H": grid[0],
        "W": grid[1],
        "y0": y0,
        "x0": x0,
        "tissue": np.zeros((CHUNK, CHUNK), np.uint8) if tissue is None else tissue,
        "error": error,
    }


def plan_slide(row: dict, settings: Settings) -> list[dict]:
    """Open a slide, choose its level, find its tissue, lay out its group: one row a block."""
    slide_id, url, mpp = str(row["slide_id"]), str(row["url"]), float(row["mpp"])
    start = time.perf_counter()
    try:
        with open_slide(url, mpp=None if np.isnan(mpp) else mpp) as slide:
            grid = tile_grid(slide, mpp=settings.mpp, patch_size=settings.patch_size, stride=settings.stride)
            thumb, thumb_mpp = read_thumbnail(slide, default_mask_mpp(grid))
            tissue = cell_fraction(tissue_mask(thumb), thumb_mpp, grid)
            identity = slide.identity
            level0 = level0_geometry(slide, grid)
    except NicError as e:
        return [_row(slide_id, url, mpp, 1, error=str(e))]
    origins = block_origins(tissue, settings.tissue_threshold)
    info = {
        "source": url,
        "identity": identity,
        "level": grid.level,
        "scale": grid.scale,
        "mpp": grid.mpp,
        "patch_size": grid.patch_size,
        "stride": grid.stride,
        "level0": level0,
        "tissue_threshold": settings.tissue_threshold,
        "n_tissue_tiles": int((tissue >= settings.tissue_threshold).sum()),
        "n_blocks": len(origins),
        "plan_seconds": round(time.perf_counter() - start, 3),
    }
    Store.open(settings.store, mode="r+").create_slide(slide_id, info, tissue, thumb)
    if not origins:  # no tissue: one empty block still tells the driver the slide is done
        return [_row(slide_id, url, mpp, 1, tissue.shape)]
    padded = np.zeros(((tissue.shape[0] // CHUNK + 1) * CHUNK, (tissue.shape[1] // CHUNK + 1) * CHUNK), np.uint8)
    padded[: tissue.shape[0], : tissue.shape[1]] = tissue
    return [
        _row(slide_id, url, mpp, len(origins), tissue.shape, y0, x0, padded[y0 : y0 + CHUNK, x0 : x0 + CHUNK])
        for y0, x0 in origins
    ]


_READER_SLIDES = OpenSlides()


def read_tiles(
    row: dict, settings: Settings, pool: ThreadPoolExecutor, threads: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Decode the tissue tiles of one block: (n, 2) cells, (n, P, P, 3) uint8 tiles, error.

    The block's rows are split over ``threads`` threads of ``pool`` (`read_cells`).
    """
    P, y0, x0 = settings.patch_size, int(row["y0"]), int(row["x0"])
    # The block's tissue is padded to a whole chunk past the grid's edge: only the grid's cells.
    tissue = row["tissue"][: int(row["H"]) - y0, : int(row["W"]) - x0]
    cells = (np.argwhere(tissue >= settings.tissue_threshold) + [y0, x0]).astype(np.int32)
    url, error = str(row["url"]), ""
    # One reopen: after a bad read an OpenSlide handle can stay broken.
    for _ in range(2):
        try:
            slide = _READER_SLIDES.get(url, float(row["mpp"]))
            grid = tile_grid(slide, mpp=settings.mpp, patch_size=P, stride=settings.stride)
            return cells, read_cells(slide, grid, cells, pool, threads), ""
        except NicError as e:
            _READER_SLIDES.drop(url)
            error = str(e)
    return cells[:0], np.zeros((0, P, P, 3), np.uint8), error


def write_codes(row: dict, cells: np.ndarray, codes: np.ndarray, settings: Settings) -> None:
    """Write one block's codes as one whole chunk (background cells 0)."""
    y0, x0, H, W = (int(row[k]) for k in ("y0", "x0", "H", "W"))
    h, w = min(CHUNK, H - y0), min(CHUNK, W - x0)
    block = np.zeros((settings.orientations, settings.code_size, h, w), np.float16)
    block[:, :, cells[:, 0] - y0, cells[:, 1] - x0] = codes.transpose(1, 2, 0)
    shape = (settings.orientations, settings.code_size, H, W)
    write_block(settings.store, str(row["slide_id"]), shape, y0, x0, block)
