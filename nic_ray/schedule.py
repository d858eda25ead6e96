"""Scheduled compression of a growing archive: one Ray job a schedule slot, submitted to a cluster.

``nic-ray schedule SOURCE... --store STORE --address http://HEAD:8265`` (a cron job, Kubernetes'
CronJob in ``cluster/``) submits ``nic-ray compress`` as a Ray job whose submission id names the
store and the slot (the hour by default). Ray refuses a second job with the same id: a scheduler
that fires twice in one slot gets one line and exit status 0, not a failure it would retry. The
job compresses only slides that are new, changed or incomplete; it waits for the job and prints
its log, and exits with the job's status (0 every slide complete, 1 some failed, 2 bad input).

Example::

    submit_slot(["s3://lab/archive/"], "s3://lab/stores/brca.zarr", ["--encoder", "nic"],
                address="http://ray-head:8265")
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from nic_ray.errors import NicError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def read_runtime_env(path: str) -> dict:
    """The Ray runtime environment in the YAML file ``path`` (``jobs/runtime_env.yaml``)."""
    import yaml

    try:
        env = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise NicError(f"--runtime-env {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(env, dict):
        raise NicError(f"--runtime-env {path}: expected a mapping such as 'working_dir: .'")
    return env


def submission_id(store: str, slot: str) -> str:
    """The job's id in the slot: the store's name and the slot, in characters Ray takes.

    >>> submission_id("s3://lab/stores/brca v2.zarr/", "2026120109")
    'compress-brca-v2-2026120109'
    """
    name = store.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")
    return f"compress-{re.sub(r'[^A-Za-z0-9-]', '-', name)}-{slot}"


def submit_slot(
    sources: list[str],
    store: str,
    options: list[str],
    address: str,
    slot_format: str = "%Y%m%d%H",
    wait: bool = True,
    poll: float = 2.0,
    runtime_env: dict | None = None,
) -> int:
    """Submit this slot's compression (``options``: `nic-ray compress` flags) with Ray's
    ``runtime_env`` (paths in it relative to the current directory); the exit status."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    slot = time.strftime(slot_format, time.gmtime())
    job = submission_id(store, slot)
    entrypoint = shlex.join(["python", "-m", "nic_ray.cli", "compress", *sources, "--store", store, *options])
    try:
        client = JobSubmissionClient(address)
        client.submit_job(entrypoint=entrypoint, submission_id=job, runtime_env=runtime_env)
    except ConnectionError as e:
        raise NicError(f"--address {address}: no Ray job server there ({e})") from None
    except AuthenticationError:
        raise NicError(
            f"--address {address}: the cluster refused this client's token; give it in RAY_AUTH_TOKEN "
            "or RAY_AUTH_TOKEN_PATH"
        ) from None
    except RuntimeError as e:
        if "already exists" not in str(e):
            raise NicError(f"--address {address}: the job server refused {job}: {str(e).splitlines()[0]}") from None
        print(f"{job}: slot {slot} was submitted already; nothing to do")
        return 0
    print(f"{job}: submitted ({entrypoint})", flush=True)
    if not wait:
        return 0
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        time.sleep(poll)
    print(client.get_job_logs(job), end="")
    info = client.get_job_info(job)
    print(f"{job}: {status.lower()}" + (f" ({info.message})" if status != "SUCCEEDED" and info.message else ""))
    return 0 if status == "SUCCEEDED" else info.driver_exit_code or 1
