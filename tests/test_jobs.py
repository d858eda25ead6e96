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
from nic_ray.slides.cache import source_identity
from nic_ray.store import Store
from tests.conftest import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


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
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # `ray start --block` can take half a minute to stop its children
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    shutil.rmtree(temp, ignore_errors=True)


def schedule(env, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nic_ray.cli", "schedule", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def submit(env, address, *args, options: str = "") -> subprocess.CompletedProcess:
    """``jobs/submit`` of the checkout, run from elsewhere."""
    return subprocess.run(
        [str(ROOT / "jobs" / "submit"), *map(str, args)],
        env={**env, "RAY_ADDRESS": address, "NIC_RAY_SUBMIT_OPTIONS": options},
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )


def test_a_schedule_compresses_each_slot_once_and_only_new_slides(head, tmp_path):
    address, env, _ = head
    archive, store = tmp_path / "archive", tmp_path / "store.zarr"
    archive.mkdir()
    for i in range(2):
        write_slide(archive / f"a{i}.tiff", TissuePainter(512, 384, seed=i), 0.5, downsamples=(1,))
    flags = ["--store", store, "--address", address, "--patch-size", "64", "--encoders", "1"]

    # From the checkout, with its runtime environment: the job runs the code uploaded from here.
    first = schedule(env, archive, *flags, "--slot", "slot-1", "--runtime-env", "jobs/runtime_env.yaml", cwd=ROOT)
    assert first.returncode == 0, first.stdout + first.stderr
    assert Store.open(store).complete_slides() == ["a0", "a1"]
    # The job's log, printed by the scheduler: our progress lines, no traceback of Ray's.
    assert "2 slides, 0 complete already, 2 to compress" in first.stdout and "Traceback" not in first.stdout

    again = schedule(env, archive, *flags, "--slot", "slot-1")  # the scheduler fired twice
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout == "compress-store-slot-1: slot slot-1 was submitted already; nothing to do\n"

    write_slide(archive / "a2.tiff", TissuePainter(512, 384, seed=2), 0.5, downsamples=(1,))
    (archive / "broken.tiff").write_bytes(b"not a slide")
    write_slide(archive / "a1.tiff", TissuePainter(384, 512, seed=7), 0.5, downsamples=(1,))  # a rescan
    second = schedule(env, archive, *flags, "--slot", "slot-2")
    assert second.returncode == 1, second.stdout + second.stderr  # a slide failed, the others did not wait
    assert "4 slides, 1 complete already, 3 to compress" in second.stdout
    after = Store.open(store)
    assert after.complete_slides() == ["a0", "a1", "a2"]
    assert after.slides()["a1"]["identity"] == source_identity(str(archive / "a1.tiff"))  # the rescan's grid
    assert after.read_tissue("a1").shape == (8, 6)  # 384 px wide, 512 px high, 64 px a cell
    last = [r for r in sorted((store / "runs").iterdir()) if (r / "report.parquet").exists()][-1]  # ids: times
    rows = {r["slide_id"]: r["status"] for r in pq.read_table(last / "report.parquet").to_pylist()}
    assert rows == {"a0": "skipped", "a1": "complete", "a2": "complete", "broken": "failed"}


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


def scraped(url: str) -> list:
    """The samples on the Prometheus endpoint ``url`` now."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list, name: str, **tags) -> float | None:
    """The value of ``name`` with ``tags`` among ``samples``, None where absent."""
    return next((s.value for s in samples if s.name == name and tags.items() <= s.labels.items()), None)


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

    # A gauge leaves with the process that set it (the job's driver), counters stay: the rate is
    # read from each scrape that the slides are counted in, the last one included.
    tags, rates, deadline = {"store": str(store)}, [], time.monotonic() + 120
    while True:
        samples = scraped(endpoint)
        rates.append(value(samples, "ray_nic_ray_tiles_per_second", **tags))
        if value(samples, COMPLETE, **tags) == 6.0 and any(store.glob("runs/*/report.parquet")):
            break
        assert time.monotonic() < deadline, "the compression job did not finish"
        time.sleep(0.1)
    assert max(rate or 0 for rate in rates) > 0, rates
    (report,) = store.glob("runs/*/report.parquet")
    tiles = sum(r["tiles"] for r in pq.read_table(report).to_pylist())
    assert value(samples, "ray_nic_ray_tiles_encoded_total", **tags) == tiles

    run, labels = tmp_path / "run", tmp_path / "labels.csv"
    train = ["train", "--store", store, "--labels", labels, "--task", "y:binary:label", "--out", run]
    train += ["--epochs", "2", "--crop-size", "24", "--strides", "2", "2", "1", "1", "--width", "8"]
    submitted = submit(env, address, *train, "--batch-size", "4", "--steps-per-epoch", "3", options="--no-wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    tags, seen = {"run": str(run), "part": "single"}, {}
    deadline = time.monotonic() + 120
    while not (run / "single" / "history.csv").exists():  # read while the worker lives: they leave with it
        samples = scraped(endpoint)
        epoch, loss = (value(samples, f"ray_nic_ray_{name}", **tags, **more) for name, more in EPOCH_METRICS)
        if epoch is not None and loss is not None:
            seen[epoch] = loss
        assert time.monotonic() < deadline, "the training job did not finish"
        time.sleep(0.25)
    last = list(csv.DictReader(open(run / "single" / "history.csv")))[-1]
    assert last["epoch"] == "2" and seen[2.0] == pytest.approx(float(last["val_loss"])), seen

    # Every command is a job the same way (jobs/submit); this one waits for the run to be written.
    while not (run / "report.html").exists():
        assert time.monotonic() < deadline + 60, "the training job wrote no report"
        time.sleep(0.5)
    data = ["--store", store, "--labels", labels]
    evaluated = submit(env, address, "evaluate", "--run", run, *data, "--resamples", "20")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert f"report: {run}/report.html" in evaluated.stdout and "Traceback" not in evaluated.stdout
    rows = pq.read_table(run / "evaluation.parquet").to_pylist()
    assert {r["subset"]: r["slides"] for r in rows} == {"train": 4, "val": 1, "test": 1}
    failed = submit(env, address, "evaluate", "--run", tmp_path / "no-run", *data)
    assert failed.returncode == 1 and f"nic-ray: error: {tmp_path / 'no-run'}" in failed.stdout
