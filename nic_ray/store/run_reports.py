"""Run reports: a Parquet table (one row a slide) and a short human summary, in the store."""

from __future__ import annotations

import io
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
    """Write ``runs/<run_id>/report.parquet`` and ``summary.txt`` in the store; return the summary."""
    table = pa.Table.from_pylist(rows, schema=pa.schema(_COLUMNS))
    table = table.append_column("run_id", pa.array([run_id] * len(rows), pa.string()))
    summary = summarize(rows, seconds)
    fs, root = fsspec.core.url_to_fs(store)
    base = f"{root.rstrip('/')}/runs/{run_id}"
    fs.makedirs(base, exist_ok=True)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs.pipe_file(f"{base}/report.parquet", buffer.getvalue())
    fs.pipe_file(f"{base}/summary.txt", (summary + f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
    return summary
