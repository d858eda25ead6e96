"""Per-slide claims, so that two runs on one store never write the same slide.

A run claims a slide by creating ``<store>/runs/claims/<slide_id>.json`` exclusively (an
``O_EXCL`` create locally, ``If-None-Match: *`` on S3) and keeps ``runs/alive/<run_id>.json``
fresh while it lives. A claim whose run has not been seen alive for `STALE_SECONDS` (its driver
was killed), or whose driver ran on this host under a pid that is gone, is taken over by the
next run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import fsspec

STALE_SECONDS = 60.0
_HEARTBEAT_SECONDS = 10.0


class Claims:
    def __init__(self, store_url: str, run_id: str):
        self.run_id = run_id
        # Our own filesystem object: zarr keeps its own (sharing one upsets their event loops).
        self._fs, root = fsspec.core.url_to_fs(store_url)
        self._root = root.rstrip("/") + "/runs"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _claim_path(self, slide_id: str) -> str:
        return f"{self._root}/claims/{slide_id}.json"

    def _alive_path(self, run_id: str) -> str:
        return f"{self._root}/alive/{run_id}.json"

    def __enter__(self) -> Claims:
        self._fs.makedirs(f"{self._root}/claims", exist_ok=True)
        self._fs.makedirs(f"{self._root}/alive", exist_ok=True)
        self._beat()
        self._thread = threading.Thread(target=self._keep_alive, daemon=True, name="nic-ray-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._fs.rm_file(self._alive_path(self.run_id))

    def _beat(self) -> None:
        beat = {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
        self._fs.pipe_file(self._alive_path(self.run_id), json.dumps(beat).encode())

    def _keep_alive(self) -> None:
        while not self._stop.wait(_HEARTBEAT_SECONDS):
            self._beat()

    def is_alive(self, run_id: str) -> bool:
        try:
            beat = json.loads(self._fs.cat_file(self._alive_path(run_id)))
        except (FileNotFoundError, ValueError):
            return False
        if beat.get("host") == socket.gethostname() and not _pid_alive(beat.get("pid", -1)):
            return False  # its driver died on this host: no need to wait for staleness
        return time.time() - beat.get("time", 0) < STALE_SECONDS

    def holder(self, slide_id: str, settle: float = 1.0) -> str | None:
        """The run holding ``slide_id``, or None. A claim file that exists but does not read yet
        is being written (locally, creating the file and writing it are two steps): it is read
        again for up to ``settle`` seconds before it counts as no claim."""
        deadline = time.monotonic() + settle
        while True:
            try:
                return json.loads(self._fs.cat_file(self._claim_path(slide_id)))["run_id"]
            except FileNotFoundError:
                return None
            except (ValueError, KeyError):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.02)

    def claim(self, slide_id: str) -> str | None:
        """Claim ``slide_id``; None when this run holds it, else the live run that does."""
        body = json.dumps({"run_id": self.run_id, "time": time.time()}).encode()
        for _ in range(2):
            try:
                self._fs.pipe_file(self._claim_path(slide_id), body, mode="create")
                return None
            except FileExistsError:
                holder = self.holder(slide_id)
                if holder == self.run_id:
                    return None
                if holder is not None and self.is_alive(holder):
                    return holder
                self.release(slide_id)  # a dead run's claim: take it over
        return self.holder(slide_id)

    def release(self, slide_id: str) -> None:
        try:
            self._fs.rm_file(self._claim_path(slide_id))
        except FileNotFoundError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
