"""A bounded local cache of remote slides (OpenSlide reads local files only).

One cache directory serves every process of a node. A slide in use holds a shared lock on its
entry, so eviction (least recently used first) never removes a file another reader has open.
Downloads land under a temporary name and are renamed into place: a killed download leaves no
file that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from nic_ray.errors import SlideError, first_line


def is_remote(source: str) -> bool:
    """Whether ``source`` is a URL that fsspec must fetch (``s3://``, ``gs://``, ``https://``…)."""
    return "://" in source and not source.startswith("file://")


def absolute(url: str | os.PathLike) -> str:
    """``url`` as every Ray worker reads it: a remote URL as it is, a local path made absolute.

    >>> absolute("s3://lab/a.zarr"), absolute("/data/a.zarr")
    ('s3://lab/a.zarr', '/data/a.zarr')
    """
    return str(url) if is_remote(str(url)) else os.path.abspath(url)


def source_identity(url: str) -> dict:
    """What tells one version of a slide file from another: size and mtime, or size and ETag."""
    if not is_remote(url):
        try:
            st = os.stat(url)
        except FileNotFoundError:
            raise SlideError(url, "no such file") from None
        return {"size": st.st_size, "mtime": st.st_mtime}
    fs, path = fsspec.core.url_to_fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise SlideError(url, "no such object") from None
    version = str(info.get("ETag") or info.get("LastModified") or info.get("mtime", "")).strip('"')
    return {"size": int(info["size"]), "etag": version}


@dataclass
class CachedSlide:
    """A downloaded slide; the entry stays in the cache at least until `release`."""

    path: str
    identity: dict
    _lock: int = field(repr=False)

    def release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # closing the descriptor drops the shared lock
            self._lock = -1


class SlideCache:
    """Remote slides downloaded into ``directory``, holding at most ``max_bytes``.

    Example::

        cache = SlideCache("/tmp/slides", max_bytes=20 * 2**30)
        slide = open_slide("s3://archive/case-001.svs", cache=cache)
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int = 50 * 2**30):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def default(cls) -> SlideCache:
        """The node's cache: ``$NIC_RAY_CACHE_DIR`` (bound ``$NIC_RAY_CACHE_BYTES``) or a temp dir."""
        directory = os.environ.get("NIC_RAY_CACHE_DIR") or Path(tempfile.gettempdir()) / "nic-ray-slides"
        return cls(directory, int(os.environ.get("NIC_RAY_CACHE_BYTES", 50 * 2**30)))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(self.directory / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def fetch(self, url: str) -> CachedSlide:
        """Download ``url`` unless an identical copy (same size and ETag) is cached."""
        identity = source_identity(url)
        size, version = identity["size"], identity["etag"]
        fs, remote_path = fsspec.core.url_to_fs(url)
        entry = self.directory / hashlib.sha256(f"{url}\0{version}\0{size}".encode()).hexdigest()[:24]
        target = entry / Path(remote_path).name
        with self._exclusive():
            if not target.exists():
                self._make_room(size, url)
            entry.mkdir(exist_ok=True)
            lock = os.open(entry / ".in-use", os.O_CREAT | os.O_RDWR)
            fcntl.flock(lock, fcntl.LOCK_SH)
        os.utime(entry)  # recency for eviction
        if not target.exists():
            partial = entry / f".partial-{os.getpid()}-{time.monotonic_ns()}"
            try:
                fs.get_file(remote_path, str(partial))  # s3fs resumes a dropped read, up to its retries
                os.replace(partial, target)
            except BaseException as e:
                partial.unlink(missing_ok=True)
                os.close(lock)
                if isinstance(e, Exception):  # this slide fails, not the run
                    raise SlideError(url, f"download failed ({type(e).__name__}: {first_line(e)})") from None
                raise
        return CachedSlide(str(target), identity, lock)

    def _make_room(self, size: int, url: str) -> None:
        if size > self.max_bytes:
            raise SlideError(
                url,
                f"{size} bytes will not fit the slide cache {self.directory} "
                f"(at most {self.max_bytes}); raise NIC_RAY_CACHE_BYTES",
            )
        entries = sorted((e for e in self.directory.iterdir() if e.is_dir()), key=lambda e: e.stat().st_mtime)
        sizes = {e: _tree_size(e) for e in entries}
        used = sum(sizes.values())
        for entry in entries:
            if used + size <= self.max_bytes:
                break
            if _try_remove(entry):
                used -= sizes[entry]
        if used + size > self.max_bytes:
            raise SlideError(url, f"the slide cache {self.directory} is full of slides in use")

    def clear(self) -> None:
        """Remove every entry not in use (the end of a job)."""
        with self._exclusive():
            for entry in [e for e in self.directory.iterdir() if e.is_dir()]:
                _try_remove(entry)


def _tree_size(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def _try_remove(entry: Path) -> bool:
    """Remove ``entry`` unless a reader holds it; the caller holds the cache lock."""
    marker = entry / ".in-use"
    fd = os.open(marker, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    shutil.rmtree(entry, ignore_errors=True)
    return True
