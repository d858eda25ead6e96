"""Compression survives what clusters do: a killed driver, a killed encoder actor, two runs at
once on one store, and the node of the encoders lost mid-run. Drivers run as their own processes connected
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


NODE_LOSS = textwrap.dedent("""
    import json, sys, threading, time, psutil, ray
    from ray.cluster_utils import Cluster
    written, n_nodes = sys.argv[1], int(sys.argv[2])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, resources={"encoder_node": 1}) for _ in range(n_nodes)]
    ray.init(address=cluster.address, logging_level="WARNING")
    from nic_ray.compress import compress
    from nic_ray.store import Store
    url, done = f"s3://slides/stores/{n_nodes}-node.zarr", {}
    run = lambda: compress(
        ["s3://slides/node-loss/"], url, encoder="nic", encoders=1, encoder_resources={"encoder_node": 1},
        progress=False)
    first = threading.Thread(target=lambda: done.update(result=run()))
    first.start()
    while first.is_alive():
        try:
            before = Store.open(url).complete_slides()
        except Exception:  # not created yet
            before = []
        if before:
            break
        time.sleep(0.2)
    # The actor's process is a child of its node's raylet.
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in nodes}
    (actor,) = [p for p in psutil.process_iter(["cmdline", "ppid"])
                if "EncodeBlocks" in " ".join(p.info["cmdline"] or []) and p.info["ppid"] in raylets]
    cluster.remove_node(raylets[actor.info["ppid"]])
    removed = time.monotonic()
    first.join()
    result, out = done["result"], {"complete_before": len(before), "waited": time.monotonic() - removed}
    out["first"] = {"counts": result.counts(), "reasons": sorted({r["reason"] for r in result.rows})}
    if not result.ok:  # a node that can hold an encoder comes back: the next run does the rest
        cluster.add_node(num_cpus=1, resources={"encoder_node": 1})
        out["again"] = run().counts()
    with open(written, "w") as f:
        json.dump(out, f)
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.parametrize("encoder_nodes", [2, 1])
def test_the_node_of_the_encoders_is_lost_mid_run(archive, reference, s3_endpoint, tmp_path, encoder_nodes):
    """A simulated cluster: a head that plans, and one or two nodes that alone can host encoders.
    Slides and the store on S3, so every task works from URLs, never from the driver's paths.
    Once a slide is complete, the node running the encoder actor is removed. With a second node
    left, Ray restarts the actor there and the run completes. With none, the run ends at once, its
    unfinished slides failed with the reason; the next run, once a node is back, does only those.
    Either way every slide equals an uninterrupted run's."""
    for i in range(N_SLIDES):
        s3_endpoint.upload_file(str(archive / f"case-{i}.tiff"), "slides", f"node-loss/case-{i}.tiff")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    written = tmp_path / "result.json"
    out = subprocess.run(
        [sys.executable, "-c", NODE_LOSS, written, str(encoder_nodes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert written.exists(), out.stdout[-3000:] + out.stderr[-5000:]
    last = json.loads(written.read_text())
    before = last["complete_before"]
    assert 0 < before < N_SLIDES, "the node was removed after the run had finished"
    if encoder_nodes == 2:
        assert last["first"]["counts"] == {"complete": N_SLIDES}, last
    else:
        first = last["first"]["counts"]
        assert first["complete"] >= before and first["complete"] + first["failed"] == N_SLIDES, last
        (reason,) = set(last["first"]["reasons"]) - {""}
        assert reason == (
            "the cluster lost the nodes that held the encoders: each encoder needs 1 encoder_node, "
            "but the Ray cluster has at most 0; add a node that can and run again"
        )
        # At once: as soon as Ray knows the node is gone, not after Ray Data's 30-minute stall guard.
        assert last["waited"] < 60, last
        assert last["again"] == {"skipped": first["complete"], "complete": first["failed"]}, last
    assert_same_store(f"s3://slides/stores/{encoder_nodes}-node.zarr", reference)
