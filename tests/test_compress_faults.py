"""Compression survives what clusters do: a killed driver, a killed encoder actor, two runs at
once on one store, and encoders on another node. Drivers run as their own processes connected
to the session's Ray (as `ray job submit` runs them), so killing one is a real driver death."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import TissuePainter, write_slide
from nic_ray.store import Store

pytestmark = pytest.mark.usefixtures("ray_session")
N_SLIDES = 6


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    for i in range(N_SLIDES):
        write_slide(d / f"case-{i}.tiff", TissuePainter(3072, 3072, tissue=0.6, seed=10 + i), 0.5, downsamples=(1, 4))
    return d


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory):
    """The store an uninterrupted run makes."""
    url = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    assert compress([str(archive)], url, encoder="nic", progress=False).ok
    return Store.open(url)


def driver(archive, store, ray_session, *extra) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-m", "nic_ray.cli", "compress", str(archive), "--store", store, "--encoder", "nic", *extra],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def complete_runs(url) -> dict[str, str]:
    """slide_id → the run that completed it (a store being written may be mid-update: retry)."""
    for _ in range(20):
        try:
            return {s: i["run_id"] for s, i in Store.open(url).slides().items() if i.get("status") == "complete"}
        except Exception:
            time.sleep(0.05)
    raise AssertionError(f"cannot read {url}")


def wait_for_first_complete(proc, url, timeout=180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(url, "zarr.json")) and (done := complete_runs(url)):
            return done
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    raise AssertionError("no slide completed in time")


def assert_same_store(url, reference):
    store = Store.open(url)
    assert store.complete_slides() == reference.complete_slides() == [f"case-{i}" for i in range(N_SLIDES)]
    for slide_id in reference.complete_slides():
        np.testing.assert_array_equal(store.read_tissue(slide_id), reference.read_tissue(slide_id))
        np.testing.assert_array_equal(store.read_embeddings(slide_id), reference.read_embeddings(slide_id))


def test_killed_driver_then_rerun(archive, reference, ray_session, tmp_path):
    url = str(tmp_path / "killed.zarr")
    proc = driver(archive, url, ray_session)
    before = wait_for_first_complete(proc, url)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(before) < N_SLIDES, "the run finished before it could be killed"
    rerun = compress([str(archive)], url, encoder="nic", progress=False)
    assert rerun.ok
    after = complete_runs(url)
    assert {s: after[s] for s in before} == before  # completed before the kill: not recomputed
    assert {after[s] for s in after.keys() - before.keys()} == {rerun.run_id}
    assert_same_store(url, reference)


def test_killed_encoder_actor(archive, reference, ray_session, tmp_path):
    url = str(tmp_path / "actor.zarr")
    proc = driver(archive, url, ray_session)
    wait_for_first_complete(proc, url)
    actors = [p for p in psutil.process_iter(["cmdline"]) if "EncodeBlocks" in " ".join(p.info["cmdline"] or [])]
    assert actors, "no encoder actor process found"
    actors[0].kill()
    actors[0].wait(timeout=10)
    # The kill landed mid-run: the actor is gone while the driver still has slides to do.
    assert proc.poll() is None and len(complete_runs(url)) < N_SLIDES, "the run finished before the kill"
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert_same_store(url, reference)


def test_two_runs_at_once_share_the_work(archive, reference, ray_session, tmp_path):
    url = str(tmp_path / "twice.zarr")
    procs = [driver(archive, url, ray_session), driver(archive, url, ray_session)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_same_store(url, reference)
    runs_dir = os.path.join(url, "runs")
    reports = [
        pq.read_table(os.path.join(runs_dir, r, "report.parquet")).to_pylist()
        for r in os.listdir(runs_dir)
        if os.path.exists(os.path.join(runs_dir, r, "report.parquet"))
    ]
    assert len(reports) == 2
    # Every slide was compressed by exactly one of the runs; the other waited for it.
    done_by = [{r["slide_id"] for r in report if r["status"] == "complete" and not r["reason"]} for report in reports]
    assert done_by[0] | done_by[1] == set(reference.complete_slides()) and not done_by[0] & done_by[1]
    # And they ran at once: one after the other, the second would have found every slide
    # "complete already". Together, each slide the other did was waited for (or done meanwhile).
    for report in reports:
        assert not [r for r in report if r["reason"] == "complete already"], report


def test_encoders_on_a_second_node(archive, reference, s3_endpoint, tmp_path):
    """A simulated two-node cluster whose second node alone can host encoders; slides and the
    store on S3, so every task works from URLs, never from the driver's paths."""
    for i in range(2):
        s3_endpoint.upload_file(str(archive / f"case-{i}.tiff"), "slides", f"two-node/case-{i}.tiff")
    script = textwrap.dedent("""
        import json, ray
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        cluster.add_node(num_cpus=2, resources={"encoder_node": 1})
        ray.init(address=cluster.address, logging_level="WARNING")
        from nic_ray.compress import compress
        nodes = {n["NodeID"]: n["Resources"].get("encoder_node", 0) for n in ray.nodes() if n["Alive"]}
        result = compress(["s3://slides/two-node/"], "s3://slides/stores/two-node.zarr", encoder="nic",
                          encoder_resources={"encoder_node": 1}, progress=False)
        print(json.dumps({"ok": result.ok, "counts": result.counts(), "nodes": sorted(nodes.values())}))
        ray.shutdown()
        cluster.shutdown()
    """)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "null"
    assert json.loads(last) == {"ok": True, "counts": {"complete": 2}, "nodes": [0, 1]}, out.stdout + out.stderr
    store = Store.open("s3://slides/stores/two-node.zarr")
    for slide_id in ("case-0", "case-1"):
        np.testing.assert_array_equal(store.read_embeddings(slide_id), reference.read_embeddings(slide_id))
