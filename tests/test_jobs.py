"""Jobs on a real Ray head: ``ray start --head`` on loopback with token authentication on, as on a
cluster, and scheduled compression submitted to it slot by slot (`nic-ray schedule`)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.store import Store

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """(job server address, the environment of a client holding the token, the Prometheus
    endpoint) of a fresh head."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid4().hex,
        "PATH": f"{BIN}:{os.environ['PATH']}",  # the jobs' `python` is this environment's
    }
    env.pop("RAY_ADDRESS", None)
    env["RAY_metrics_report_interval_ms"] = "500"  # workers hand their metrics to the node twice a second
    dashboard, metrics = free_port(), free_port()
    command = [str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=2"]
    command += ["--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
    command += ["--include-dashboard=true", f"--temp-dir={temp}", f"--metrics-export-port={metrics}"]
    # Ports of its own: the suite's embedded Ray holds the defaults of its dashboard agent and others.
    for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port"):
        command.append(f"--{flag}={free_port()}")
    command.append(f"--ray-client-server-port={free_port()}")
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    address = f"http://127.0.0.1:{dashboard}"
    # Ready when it takes a job: its HTTP server answers before the agent that runs jobs is up.
    deadline = time.monotonic() + 120
    probe = [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait", "--", "true"]
    while subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode != 0:
        assert process.poll() is None and time.monotonic() < deadline, "the head does not take jobs"
        time.sleep(1)
    yield address, env, f"http://127.0.0.1:{metrics}/metrics"
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def schedule(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nic_ray.cli", "schedule", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_schedule_compresses_each_slot_once_and_only_new_slides(head, tmp_path):
    address, env, _ = head
    archive, store = tmp_path / "archive", tmp_path / "store.zarr"
    archive.mkdir()
    for i in range(2):
        write_slide(archive / f"a{i}.tiff", TissuePainter(512, 384, seed=i), 0.5, downsamples=(1,))
    flags = ["--store", store, "--address", address, "--patch-size", "64", "--encoders", "1"]

    first = schedule(env, archive, *flags, "--slot", "slot-1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert Store.open(store).complete_slides() == ["a0", "a1"]
    # The job's log, printed by the scheduler: our progress lines, no traceback of Ray's.
    assert "2 slides, 0 complete already, 2 to compress" in first.stdout and "Traceback" not in first.stdout

    again = schedule(env, archive, *flags, "--slot", "slot-1")  # the scheduler fired twice
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout == "compress-store-slot-1: slot slot-1 was submitted already; nothing to do\n"

    write_slide(archive / "a2.tiff", TissuePainter(512, 384, seed=2), 0.5, downsamples=(1,))
    (archive / "broken.tiff").write_bytes(b"not a slide")
    second = schedule(env, archive, *flags, "--slot", "slot-2")
    assert second.returncode == 1, second.stdout + second.stderr  # a slide failed, the others did not wait
    assert "4 slides, 2 complete already, 2 to compress" in second.stdout
    assert Store.open(store).complete_slides() == ["a0", "a1", "a2"]
    last = [r for r in sorted((store / "runs").iterdir()) if (r / "report.parquet").exists()][-1]  # ids: times
    rows = {r["slide_id"]: r["status"] for r in pq.read_table(last / "report.parquet").to_pylist()}
    assert rows == {"a0": "skipped", "a1": "skipped", "a2": "complete", "broken": "failed"}


def test_a_bad_source_fails_the_job_with_a_readable_line_and_no_token_is_refused(head, tmp_path):
    address, env, _ = head
    missing = tmp_path / "no-archive"
    bad = schedule(env, missing, "--store", tmp_path / "s.zarr", "--address", address, "--slot", "bad")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert f"nic-ray: error: {missing}" in bad.stdout and "Traceback" not in bad.stdout
    assert "compress-s-bad: failed" in bad.stdout
    # Token authentication is on: a client without the token is refused, in one line.
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    refused = schedule(no_token, missing, "--store", tmp_path / "s.zarr", "--address", address, "--slot", "other")
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"nic-ray: error: --address {address}: ") and refused.stderr.count("\n") == 1
