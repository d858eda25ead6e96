"""What to compress: files, directories, globs, ``s3://`` prefixes and manifests → slide sources."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec

from nic_ray.errors import NicError
from nic_ray.tables import read_table

# Extensions of slide files OpenSlide reads, for directories and prefixes.
SLIDE_EXTENSIONS = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


class SourceError(NicError):
    """A source list that cannot be compressed as given (usage error)."""


@dataclass(frozen=True)
class SlideSource:
    url: str
    slide_id: str
    mpp: float | None = None  # override of the file's µm/px


def default_slide_id(url: str) -> str:
    """The file name without its extension: ``s3://a/b/case-1.svs`` → ``case-1``."""
    return PurePosixPath(url.rstrip("/")).stem


def check_slide_id(slide_id: str, url: str) -> str:
    if not _SAFE_ID.match(slide_id) or slide_id in (".", ".."):
        raise SourceError(f"{url}: unsafe slide id {slide_id!r}; use only letters, digits, '.', '_', '-'")
    return slide_id


def _manifest(url: str) -> list[SlideSource]:
    table = read_table(url, "manifest", SourceError)
    if "url" not in table.column_names:
        raise SourceError(f"{url}: the manifest needs a 'url' column (has {', '.join(table.column_names)})")
    rows = table.to_pylist()
    out = []
    for i, row in enumerate(rows, start=2 if not url.endswith(".parquet") else 1):
        mpp = row.get("mpp")
        if mpp is not None and (not isinstance(mpp, (int, float)) or not mpp > 0 or math.isnan(mpp)):
            raise SourceError(f"{url}: row {i}: mpp must be a positive number, not {mpp!r}")
        slide_url = str(row["url"])
        if "://" not in slide_url and not slide_url.startswith("/") and "://" not in url:
            slide_url = os.path.abspath(PurePosixPath(url).parent / slide_url)  # relative to the manifest
        out.append(SlideSource(slide_url, str(row.get("slide_id") or default_slide_id(slide_url)), mpp))
    return out


def _expand_one(source: str) -> list[SlideSource]:
    if source.endswith((".csv", ".parquet")):
        return _manifest(source)
    fs, path = fsspec.core.url_to_fs(source)
    protocol = source.split("://")[0] + "://" if "://" in source else ""

    def url(p: str) -> str:
        # Absolute local paths: tasks on other nodes must not depend on the driver's cwd.
        return protocol + p if protocol else os.path.abspath(p)

    if any(c in path for c in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        found = sorted(p for p in fs.find(path) if PurePosixPath(p).suffix.lower() in SLIDE_EXTENSIONS)
    elif fs.exists(path):
        found = [path]
    else:
        raise SourceError(f"{source}: no such file, directory or prefix")
    if not found:
        raise SourceError(f"{source}: no slides found there")
    return [SlideSource(url(p), default_slide_id(p)) for p in found]


def expand_sources(sources: list[str]) -> list[SlideSource]:
    """Every slide named by ``sources``, each with a safe, unique ``slide_id``.

    A source is a slide file, a directory or ``s3://`` prefix (searched for slide files), a glob,
    or a CSV/Parquet manifest with a ``url`` column and optional ``slide_id`` and ``mpp``.

    Example::

        expand_sources(["archive/", "s3://lab/new/*.svs"])
    """
    slides: list[SlideSource] = []
    for source in sources:
        slides += _expand_one(str(source))
    seen: dict[str, str] = {}
    for s in slides:
        check_slide_id(s.slide_id, s.url)
        if s.slide_id in seen and seen[s.slide_id] != s.url:
            raise SourceError(
                f"{s.url}: slide id {s.slide_id!r} is also that of {seen[s.slide_id]}; give ids in a manifest"
            )
        seen[s.slide_id] = s.url
    return list({s.slide_id: s for s in slides}.values())
