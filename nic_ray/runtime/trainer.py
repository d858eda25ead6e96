"""The Ray Train set-up every nic-ray training shares: the run directory's resume guard, one
`TorchTrainer` per model, and inside the workers, resuming from and reporting a checkpoint every
epoch.

A run directory (local or ``s3://``) is Ray Train's storage path: the same command run again
finds the last checkpoint of each model and resumes from it; ``max_failures`` restarts of a
failed worker group do the same within one command.

Example (inside a training loop)::

    rank, world, device = worker_setup()
    state, weights = restore({"adam": optimizer}, {"epoch": 0, "history": []})
    while state["epoch"] < epochs:
        ...
        report_epoch(metrics, {"model": net.state_dict()}, {"adam": optimizer}, state)
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence

import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer

from nic_ray.cpu_memory import reuse_freed_memory, worker_runtime_env
from nic_ray.runtime.checkpoint import load_checkpoint, save_checkpoint
from nic_ray.runtime.resources import Resources
from nic_ray.runtime.run_files import RunError, RunFiles


def open_run(url: str, asked: dict, what: str = "run", record: str = "run.json") -> RunFiles:
    """The run directory at ``url``, recording what was ``asked`` in ``record``; a run that asked
    otherwise is refused, so that a resumed run never mixes two configurations."""
    files = RunFiles(url)
    if not files.exists(record):
        files.write_json(record, asked)
    elif _jsonable(files.read_json(record)) != _jsonable(asked):
        raise RunError(f"{url}: holds {what} with other data or options; use another --out")
    return files


def _jsonable(value):
    return json.loads(json.dumps(value))


def fit(
    files: RunFiles,
    name: str,
    loop: Callable[[dict], None],
    config: dict,
    resources: Resources,
    datasets: dict[str, ray.data.Dataset] | None = None,
    callbacks: Sequence[UserCallback] = (),
) -> ray.train.Result:
    """Run ``loop(config)`` on Ray Train workers as run ``name`` of ``files``, resuming from its
    last checkpoint; returns Ray Train's result (its checkpoint is the last epoch's). ``callbacks``
    see each report (a sweep's `TuneReportCallback`)."""
    storage_path, filesystem = files.ray_storage()
    use_gpu = resources.gpus_per_worker > 0
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": resources.cpus_per_worker}
            | ({"GPU": resources.gpus_per_worker} if use_gpu else {}),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env=worker_runtime_env(),
            callbacks=list(callbacks),
            # Ray Train's own INFO lines (a checkpoint written, a result reported) twice an epoch
            # drown the epoch's progress line in a job's log; its warnings and errors stay.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    # Ray Train leaves its own Ctrl-C handler in place after the run, holding the controller: the
    # idle controller process would live as long as the driver, and a later Ctrl-C would go to it.
    handler = signal.getsignal(signal.SIGINT)  # None where it was not set from Python
    try:
        return trainer.fit()
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def worker_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this Ray Train worker, made ready to train on its CPU too."""
    reuse_freed_memory()
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def restore(
    optimizers: dict[str, torch.optim.Optimizer], initial: dict
) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(state, weights by name) of the run's last checkpoint, ``optimizers`` restored in place;
    (``initial``, {}) on a first start. ``state["starts"]`` counts the starts."""
    state, weights = {**initial, "starts": 0}, {}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state, weights = load_checkpoint(directory, optimizers)
    state["starts"] += 1
    return state, weights


def report_epoch(
    metrics: dict,
    weights: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
) -> None:
    """Report an epoch's ``metrics`` with a checkpoint of it (written by rank 0 alone)."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            save_checkpoint(directory, weights, optimizers, state)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def last_checkpoint(result: ray.train.Result) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(state, weights by name) of a finished run's last checkpoint."""
    with result.checkpoint.as_directory() as directory:
        return load_checkpoint(directory)
