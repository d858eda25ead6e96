"""Per-slide claims of concurrent runs, on local disk and on S3 (conditional writes through a real
S3 endpoint): one holder per slide even when runs race, and a dead run's claims taken over."""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import fsspec
import pytest

from nic_ray.store.claims import STALE_SECONDS, Claims


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path, s3_endpoint):
    if request.param == "local":
        return str(tmp_path / "store.zarr")
    return f"s3://slides/claims/{tmp_path.name}/store.zarr"


def test_racing_runs_get_one_holder_per_slide(store_url):
    slides = [f"s{i}" for i in range(16)]
    with Claims(store_url, "run-a") as a, Claims(store_url, "run-b") as b:
        with ThreadPoolExecutor(8) as pool:  # both runs claim every slide at once
            got_a = pool.map(a.claim, slides)
            got_b = pool.map(b.claim, slides)
            got = list(zip(got_a, got_b))
        for slide, (for_a, for_b) in zip(slides, got):
            holder = a.holder(slide)
            assert holder in ("run-a", "run-b") and holder == b.holder(slide)
            # The holder was told it holds it (None); the other was told who does.
            assert (for_a, for_b) == ((None, "run-a") if holder == "run-a" else ("run-b", None)), slide
        assert a.claim(slides[0]) == (
            None if a.holder(slides[0]) == "run-a" else "run-b"
        )  # asking again changes nothing
        a.release("s0")
        assert a.holder("s0") is None and b.claim("s0") is None and a.claim("s0") == "run-b"


def test_a_dead_runs_claims_are_taken_over(store_url):
    fs, root = fsspec.core.url_to_fs(store_url)
    runs = root.rstrip("/") + "/runs"
    for folder in ("alive", "claims"):
        fs.makedirs(f"{runs}/{folder}", exist_ok=True)
    # A run whose driver on another host stopped beating two minutes ago.
    fs.pipe_file(
        f"{runs}/alive/run-gone.json",
        json.dumps({"time": time.time() - 2 * STALE_SECONDS, "host": "elsewhere", "pid": 1}).encode(),
    )
    fs.pipe_file(f"{runs}/claims/s1.json", json.dumps({"run_id": "run-gone", "time": 0}).encode())
    # A run whose driver on this host is gone (its pid no longer exists), beating a second ago.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fs.pipe_file(
        f"{runs}/alive/run-dead.json",
        json.dumps(
            {"time": time.time() - 1, "host": __import__("socket").gethostname(), "pid": int(dead.stdout)}
        ).encode(),
    )
    fs.pipe_file(f"{runs}/claims/s2.json", json.dumps({"run_id": "run-dead", "time": 0}).encode())
    # A live run on another host, beating now: its claim stands.
    fs.pipe_file(
        f"{runs}/alive/run-live.json", json.dumps({"time": time.time(), "host": "elsewhere", "pid": 1}).encode()
    )
    fs.pipe_file(f"{runs}/claims/s3.json", json.dumps({"run_id": "run-live", "time": 0}).encode())
    fs.invalidate_cache()
    with Claims(store_url, "run-new") as claims:
        assert [claims.claim(s) for s in ("s1", "s2", "s3")] == [None, None, "run-live"]
        assert [claims.holder(s) for s in ("s1", "s2", "s3")] == ["run-new", "run-new", "run-live"]
        assert claims.is_alive("run-new") and not claims.is_alive("run-gone")
    assert not Claims(store_url, "x").is_alive("run-new")  # a run that ended says so


def test_a_claim_being_written_is_not_taken_over(store_url):
    """Locally a claim is created, then written: another run that reads it in between finds it
    empty. It waits for the content instead of taking the claim over (the racing test above
    caught that once on a loaded machine: both runs held the slide)."""
    import threading

    fs, root = fsspec.core.url_to_fs(store_url)
    runs = root.rstrip("/") + "/runs"
    with Claims(store_url, "run-a") as a, Claims(store_url, "run-b") as b:
        fs.pipe_file(f"{runs}/claims/s9.json", b"")  # created by run-a, not written yet
        writer = threading.Timer(
            0.2, lambda: fs.pipe_file(f"{runs}/claims/s9.json", json.dumps({"run_id": "run-a", "time": 0}).encode())
        )
        writer.start()
        assert b.claim("s9") == "run-a" and a.holder("s9") == "run-a"
        writer.join()
