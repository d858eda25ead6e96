"""The report of a store: its compression runs, the slides that failed and why, and a mosaic of
slide thumbnails with their tissue grids."""

from __future__ import annotations

import numpy as np

from nic_ray.report import plots
from nic_ray.report.page import Section, Table, figure_image, write_page
from nic_ray.store import Store
from nic_ray.store.run_reports import run_summaries

MOSAIC_SLIDES = 48


def store_report(store: str) -> str:
    """Write ``<store>/report.html`` and return its path.

    Example::

        compress(["slides/"], "grids.zarr")
        store_report("grids.zarr")  # 'grids.zarr/report.html'
    """
    source = Store.open(store)
    slides = source.slides()
    complete = [s for s, info in slides.items() if info.get("status") == "complete"]
    summary = Section(
        "Store",
        [f"{source.config.describe()}.", f"{len(complete)} of {len(slides)} slides complete."],
    )
    runs = run_summaries(source.url)
    run_columns = ["run", "finished", "slides", "complete", "skipped", "failed", "tiles", "seconds", "tiles/s"]
    runs_section = Section(
        "Compression runs",
        tables=[Table(run_columns, [[r[c] for c in run_columns] for r in runs], id="runs")],
    )
    # A slide's latest failure, unless a later run completed it.
    failures: dict[str, list] = {}
    for r in runs:
        for row in r["failures"]:
            failures[row["slide_id"]] = [row["slide_id"], r["run"], row["reason"]]
    failed = [row for slide_id, row in failures.items() if slide_id not in complete]
    failed_section = Section(
        "Failed slides",
        [] if failed else ["None."],
        [Table(["slide", "run", "reason"], failed, id="failed")] if failed else [],
    )
    mosaic = Section("Slides and their tissue grids")
    shown = complete[:MOSAIC_SLIDES]
    if len(complete) > len(shown):
        mosaic.text.append(f"The first {len(shown)} of {len(complete)} complete slides.")
    tiles = []
    for slide_id in shown:
        info = slides[slide_id]
        tissue = source.read_tissue(slide_id) >= info.get("tissue_threshold", 26)
        level0 = info["level0"]
        H, W = info["grid"]
        title = f"{slide_id} ({H}×{W}, {int(np.sum(tissue))} tissue)"
        cell_px = info["stride"] * level0["downsample"]
        tiles.append((title, source.read_thumbnail(slide_id), tissue, tuple(level0["size"]), cell_px))
    if tiles:
        mosaic.images.append(figure_image(plots.mosaic(tiles), "thumbnails; tissue cells outlined in green", wide=True))
    sections = [summary, runs_section, failed_section, mosaic]
    return write_page(f"{source.url.rstrip('/')}/report.html", f"Store {source.url}", "compressed by nic-ray", sections)
