"""S3 that fails: an endpoint that cannot be reached, a bucket that does not exist, credentials
refused. Each is one line naming the URL and the problem, exit status 2, before anything is
written; the credentials themselves are never shown."""

import os
import socket
import subprocess
import sys
import time

import fsspec
import pytest
import s3fs

from nic_ray.cli import main
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from tests.conftest import free_port


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "tissue.tiff"
    write_slide(path, TissuePainter(512, 512, seed=4), 0.5, downsamples=(1,))
    return path


def test_an_endpoint_that_cannot_be_reached(s3_endpoint, slide, monkeypatch, capsys):
    monkeypatch.setitem(fsspec.config.conf["s3"], "endpoint_url", f"http://127.0.0.1:{free_port()}")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        code = main(["compress", str(slide), "--store", "s3://slides/unreachable.zarr"])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("nic-ray: error: --store s3://slides/unreachable.zarr: cannot reach the storage (")


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
