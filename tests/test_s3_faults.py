"""S3 that fails: an endpoint that cannot be reached, a bucket that does not exist, credentials
refused: each is one line naming the URL and the problem, exit status 2, before anything is
written; the credentials themselves are never shown. A connection dropped mid-read: resumed, or
the slide fails alone."""

import io
import os
import socket
import subprocess
import sys
import time
import uuid

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs

from nic_ray.cli import main
from nic_ray.compress import compress
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.slides.cache import SlideCache
from nic_ray.store import Store
from tests.conftest import S3_SECRET, free_port


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "tissue.tiff"
    write_slide(path, TissuePainter(512, 512, seed=4), 0.5, downsamples=(1,))
    return path


def compress_through(endpoint: str, slide, store: str, monkeypatch, capsys) -> tuple[int, str]:
    """`nic-ray compress` with ``endpoint`` as the S3 endpoint: (exit status, stderr)."""
    monkeypatch.setitem(fsspec.config.conf["s3"], "endpoint_url", endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        code = main(["compress", str(slide), "--store", store])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    return code, capsys.readouterr().err


def test_an_endpoint_that_cannot_be_reached(s3_endpoint, slide, monkeypatch, capsys):
    store = "s3://slides/unreachable.zarr"
    code, err = compress_through(f"http://127.0.0.1:{free_port()}", slide, store, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"nic-ray: error: --store {store}: cannot reach the storage (")


def test_credentials_in_the_endpoint_url_are_refused_unshown(s3_endpoint, slide, monkeypatch, capsys):
    store = "s3://slides/in-url.zarr"
    code, err = compress_through(f"http://AKIAINURL:{S3_SECRET}@127.0.0.1:1", slide, store, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and S3_SECRET not in err and "AKIAINURL" not in err, err
    assert err.startswith(f"nic-ray: error: --store {store}: the storage endpoint's URL holds credentials; give")


def test_a_bucket_that_does_not_exist(s3_endpoint, slide, tmp_path, capsys):
    assert main(["compress", str(slide), "--store", "s3://no-such-bucket/lab.zarr"]) == 2
    err = capsys.readouterr().err
    assert err == "nic-ray: error: --store s3://no-such-bucket/lab.zarr: no bucket 'no-such-bucket' at this endpoint\n"
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\ntissue,1\n")
    command = ["train", "--store", "s3://slides/none.zarr", "--labels", str(labels), "--task", "y:binary:label"]
    assert main([*command, "--out", "s3://other-lab/runs/a"]) == 2
    assert "--out s3://other-lab/runs/a: no bucket 'other-lab'" in capsys.readouterr().err
    assert "no-such-bucket" not in [b["Name"] for b in s3_endpoint.list_buckets()["Buckets"]]


def test_credentials_refused_are_named_not_shown(slide, tmp_path):
    """A second S3 endpoint (moto's server in its own process) that checks credentials."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.1)
        secret = "nicray-never-shown-5f3a9c"
        env = {
            **os.environ,
            "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "AKIANICRAYREFUSED",
            "AWS_SECRET_ACCESS_KEY": secret,
        }
        run = subprocess.run(
            [sys.executable, "-m", "nic_ray.cli", "compress", str(slide), "--store", "s3://lab/refused.zarr"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.kill()
        server.wait()
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith("nic-ray: error: --store s3://lab/refused.zarr: access refused (") and "credentials" in line
    assert secret not in run.stderr


def test_a_connection_dropped_mid_read_is_resumed_or_fails_that_slide_alone(
    s3_faults, s3_endpoint, slide, tmp_path, ray_session
):
    """Ray's workers read the slides through a proxy that cuts responses mid-body. Twice cut, a
    download is resumed by s3fs from the byte it had (its grid equals the local file's); cut on
    every try, the slide fails alone in one line naming it, nothing of it is left looking
    complete, and the next run, the connection sound, completes it alone."""
    # Names of their own: the node's slide cache outlives the session.
    resumed, lost = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("resumed", "lost"))
    for name in (resumed, lost):
        s3_endpoint.upload_file(str(slide), "slides", f"dropped/{name}.tiff")
    s3_faults.cut(f"/slides/dropped/{resumed}.tiff", times=2, after=os.path.getsize(slide) // 3)
    # s3fs resumes from the byte it had, so a slide is lost only where no try gets far.
    s3_faults.cut(f"/slides/dropped/{lost}.tiff", times=1000, after=1000)
    store, flags = "s3://slides/stores/dropped.zarr", ["--encoder", "mean-rgb", "--patch-size", "32"]
    assert main(["compress", "s3://slides/dropped/", "--store", store, *flags]) == 1
    first = report_rows(store)
    assert {r["slide_id"]: r["status"] for r in first} == {resumed: "complete", lost: "failed"}
    assert s3_faults.cuts[f"/slides/dropped/{resumed}.tiff"][0] == 0  # both its cuts happened
    (reason,) = [r["reason"] for r in first if r["slide_id"] == lost]
    assert reason.startswith(f"s3://slides/dropped/{lost}.tiff: download failed (") and "\n" not in reason, reason
    assert Store.open(store).complete_slides() == [resumed]
    cached = SlideCache.default().directory
    assert not list(cached.glob(f"*/{lost}.tiff")) and not list(cached.glob("*/.partial-*"))
    local = tmp_path / "local.zarr"
    assert compress([str(slide)], str(local), encoder="mean-rgb", patch_size=32, progress=False).ok
    expected = Store.open(str(local)).read_embeddings("tissue")
    np.testing.assert_array_equal(Store.open(store).read_embeddings(resumed), expected)

    s3_faults.cut(f"/slides/dropped/{lost}.tiff", times=0, after=0)
    assert main(["compress", "s3://slides/dropped/", "--store", store, *flags]) == 0
    again = report_rows(store)
    assert {r["slide_id"]: r["status"] for r in again} == {resumed: "skipped", lost: "complete"}
    np.testing.assert_array_equal(Store.open(store).read_embeddings(lost), expected)


def report_rows(store: str) -> list[dict]:
    """The rows of the store's latest compression run (run ids sort by time)."""
    fs, root = fsspec.core.url_to_fs(store)
    fs.invalidate_cache()
    latest = sorted(fs.glob(f"{root}/runs/*/report.parquet"))[-1]
    return pq.read_table(io.BytesIO(fs.cat_file(latest))).to_pylist()
