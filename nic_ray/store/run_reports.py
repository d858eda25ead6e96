"""Run reports: a Parquet table (one row a slide), a short human summary and the run's times,
in the store's ``runs/<run_id>/``."""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

_COLUMNS = {
    "slide_id": pa.string(),
    "url": pa.string(),
    "status": pa.string(),
    "tiles": pa.int64(),
    "seconds": pa.float64(),
    "reason": pa.string(),
}


def summarize(rows: list[dict], seconds: float) -> str:
    counts = Counter(r["status"] for r in rows)
    tiles = sum(r["tiles"] for r in rows)
    lines = [
        f"{len(rows)} slides: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        f"{tiles:,} tiles encoded in {seconds:,.1f} s ({tiles / max(seconds, 1e-9):,.0f} tiles/s)",
    ]
    lines += [f"failed: {r['slide_id']}: {r['reason']}" for r in rows if r["status"] == "failed"]
    return "\n".join(lines)


def write_report(store: str, run_id: str, rows: list[dict], seconds: float) -> str:
    """Write ``runs/<run_id>/report.parquet``, ``summary.txt`` and ``run.json`` in the store;
    return the summary."""
    table = pa.Table.from_pylist(rows, schema=pa.schema(_COLUMNS))
    table = table.append_column("run_id", pa.array([run_id] * len(rows), pa.string()))
    summary = summarize(rows, seconds)
    fs, root = fsspec.core.url_to_fs(store)
    base = f"{root.rstrip('/')}/runs/{run_id}"
    fs.makedirs(base, exist_ok=True)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs.pipe_file(f"{base}/report.parquet", buffer.getvalue())
    finished = time.strftime("%Y-%m-%d %H:%M:%S")
    fs.pipe_file(f"{base}/summary.txt", (summary + f"\nfinished {finished}\n").encode())
    fs.pipe_file(f"{base}/run.json", json.dumps({"run_id": run_id, "finished": finished, "seconds": seconds}).encode())
    return summary


def run_summaries(store: str) -> list[dict]:
    """The store's compression runs, oldest first: when, slides by status, tiles, seconds,
    tiles/s, and the rows of the slides that failed."""
    fs, root = fsspec.core.url_to_fs(store)
    out = []
    for report in sorted(fs.glob(f"{root.rstrip('/')}/runs/*/report.parquet")):
        run_dir = report.rsplit("/", 1)[0]
        rows = pq.read_table(io.BytesIO(fs.cat_file(report))).to_pylist()
        try:
            times = json.loads(fs.cat_file(f"{run_dir}/run.json"))
        except FileNotFoundError:  # runs written before run.json: their times are in summary.txt only
            times = {}
        counts = Counter(r["status"] for r in rows)
        tiles, seconds = sum(r["tiles"] for r in rows), times.get("seconds")
        out.append(
            {
                "run": run_dir.rsplit("/", 1)[-1],
                "finished": times.get("finished"),
                "slides": len(rows),
                "complete": counts["complete"],
                "skipped": counts["skipped"],
                "failed": counts["failed"],
                "tiles": tiles,
                "seconds": seconds,
                "tiles/s": tiles / seconds if seconds else None,
                "failures": [r for r in rows if r["status"] == "failed"],
            }
        )
    return out
