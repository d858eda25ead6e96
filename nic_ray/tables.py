"""Tables users give (manifests, label tables, patch lists) and tables nic-ray writes: CSV or
Parquet, local or any fsspec URL."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

from nic_ray.errors import NicError


def read_table(url: str, what: str, error: type[NicError] = NicError) -> pa.Table:
    """The CSV or Parquet table at ``url``, or ``error`` in one line naming ``what`` it is."""
    try:
        with fsspec.open(str(url), "rb") as f:
            return pyarrow.parquet.read_table(f) if str(url).endswith(".parquet") else pyarrow.csv.read_csv(f)
    except (OSError, pa.ArrowInvalid) as e:
        raise error(f"{url}: cannot read the {what} ({str(e).splitlines()[0]})") from None


def write_bytes(url: str, data: bytes) -> None:
    """``data`` to a file at ``url``, its folder made where needed."""
    fs, path = fsspec.core.url_to_fs(str(url))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def write_parquet(table: pa.Table, url: str) -> None:
    """``table`` to a Parquet file at ``url``."""
    with fsspec.open(str(url), "wb") as f:
        pyarrow.parquet.write_table(table, f)
