"""Jobs on a real Ray head: ``ray start --head`` on loopback with token authentication on, as on a
cluster, and scheduled compression submitted to it slot by slot (`nic-ray schedule`)."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.store import Store
from tests.conftest import free_port

BIN = Path(sys.executable).parent


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


COMPLETE = "ray_nic_ray_slides_complete_total"
EPOCH_METRICS = (("epoch", {}), ("train_metric", {"metric": "val_loss"}))


def scraped(url: str, name: str, **tags) -> float | None:
    """The value of ``name`` with ``tags`` on the Prometheus endpoint ``url``, None while absent."""
    for family in text_string_to_metric_families(urllib.request.urlopen(url, timeout=5).read().decode()):
        for sample in family.samples:
            if sample.name == name and tags.items() <= sample.labels.items():
                return sample.value
    return None


def test_compression_and_training_jobs_publish_their_progress_to_prometheus(head, tmp_path):
    """The head's Prometheus endpoint, scraped while the jobs run, has what they did: slides and
    tiles of a compression job (as its run report says), epochs and losses of a training job
    submitted with ``ray job submit`` (as its history says)."""
    address, env, endpoint = head
    archive, store = tmp_path / "archive", tmp_path / "published.zarr"
    archive.mkdir()
    rows = ["slide_id,label,split"]
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        write_slide(archive / f"p{i}.tiff", TissuePainter(512, 384, seed=10 + i), 0.5, downsamples=(1,))
        rows.append(f"p{i},{i % 2},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    flags = ["--store", store, "--address", address, "--patch-size", "64", "--slot", "published", "--no-wait"]
    assert schedule(env, archive, *flags).returncode == 0

    # A gauge leaves with the process that set it (the job's driver), so the rate is read while
    # the slides come in; counters stay.
    tags, rates, deadline = {"store": str(store)}, [], time.monotonic() + 120
    while not any(store.glob("runs/*/report.parquet")) or scraped(endpoint, COMPLETE, **tags) != 6.0:
        rates.append(scraped(endpoint, "ray_nic_ray_tiles_per_second", **tags))
        assert time.monotonic() < deadline, "the compression job did not finish"
        time.sleep(0.1)
    assert max(rate or 0 for rate in rates) > 0, rates
    (report,) = store.glob("runs/*/report.parquet")
    tiles = sum(r["tiles"] for r in pq.read_table(report).to_pylist())
    while scraped(endpoint, "ray_nic_ray_tiles_encoded_total", **tags) != tiles:
        assert time.monotonic() < deadline, scraped(endpoint, "ray_nic_ray_tiles_encoded_total", **tags)
        time.sleep(0.1)

    run = tmp_path / "run"
    train = ["nic-ray", "train", "--store", str(store), "--labels", str(tmp_path / "labels.csv")]
    train += ["--task", "y:binary:label", "--out", str(run), "--epochs", "2", "--crop-size", "24", "--strides"]
    train += ["2", "2", "1", "1", "--width", "8", "--batch-size", "4", "--steps-per-epoch", "3"]
    submitted = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait", "--", *train],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    tags, seen = {"run": str(run), "part": "single"}, {}
    deadline = time.monotonic() + 120
    while not (run / "single" / "history.csv").exists():  # read while the worker lives: they leave with it
        epoch, loss = (scraped(endpoint, f"ray_nic_ray_{name}", **tags, **more) for name, more in EPOCH_METRICS)
        if epoch is not None and loss is not None:
            seen[epoch] = loss
        assert time.monotonic() < deadline, "the training job did not finish"
        time.sleep(0.25)
    last = list(csv.DictReader(open(run / "single" / "history.csv")))[-1]
    assert last["epoch"] == "2" and seen[2.0] == pytest.approx(float(last["val_loss"])), seen
