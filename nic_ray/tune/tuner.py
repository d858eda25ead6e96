"""Ray Tune sweeps of slide-level models, over the CNN's options and over stores compressed
beforehand (encoders, code sizes, strides): trials in parallel, poor ones stopped early (ASHA),
the next proposed by Optuna, and the same command run again resumes a sweep whose driver died.

Each trial is a function trainable that trains one part with the project's own Ray Train loop
(`train`), its epochs reported to Tune as they end. A sweep directory, local or ``s3://``::

    SWEEP/sweep.json           what was asked (another space, data or search on it is refused)
    SWEEP/tune/                Ray Tune's experiment (restored by the next run of the command)
    SWEEP/trials/<trial_id>/   each trial's training run, as `nic-ray train --out` writes it
    SWEEP/trials.parquet       one row a trial: configuration, status, why it stopped, epochs, metric
    SWEEP/best/                the best trial's run: `evaluate`, `predict` and `heatmap` take it

Example::

    result = sweep(["grids.zarr"], "labels.csv", ["label:binary:label"], "sweeps/label", trials=8, epochs=10)
    result.best["val_loss"], result.command  # `nic-ray train` of every part with the best options
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import shlex
from dataclasses import asdict, dataclass

import pyarrow as pa
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from nic_ray.errors import NicError
from nic_ray.options import as_flags, split_options
from nic_ray.progress import Progress
from nic_ray.ray_cluster import fitting_count
from nic_ray.runtime.resources import Resources
from nic_ray.runtime.run_files import RunFiles
from nic_ray.runtime.trainer import open_run
from nic_ray.slides.cache import absolute
from nic_ray.store import Store
from nic_ray.tables import read_table, write_parquet
from nic_ray.train.labels import load_labels, parse_task
from nic_ray.train.metrics import METRIC_NAMES
from nic_ray.train.options import TrainOptions
from nic_ray.train.splits import plan_splits
from nic_ray.train.trainer import keep_stopped, train
from nic_ray.tune.options import SweepOptions
from nic_ray.tune.space import SpaceError, load_space, trial_options


@dataclass
class SweepResult:
    sweep: str
    part: str  # the part whose validation slides the sweep tuned on
    trials: pa.Table  # trials.parquet
    best: dict  # the best trial's row
    command: str  # `nic-ray train` of every part with the best trial's options


def sweep(
    stores: list[str], labels: str, tasks: list[str], out: str, space: str | None = None, **kwargs
) -> SweepResult:
    """Search ``space`` (a YAML file; default `default_space`) for the options that train the best
    model of ``tasks`` on ``stores`` (several: the store is searched too). ``kwargs`` are
    `SweepOptions`, `TrainOptions` (the trials' base) and `Resources` (of each trial)."""
    options, base, resources = split_options(kwargs, SweepOptions, TrainOptions, Resources)
    stores = [absolute(s) for s in stores]
    labels, out = absolute(labels), absolute(out)
    searched = load_space(space, base, resources.workers)
    parsed = [parse_task(t) for t in tasks]
    mode = options.mode or ("min" if options.metric.endswith("loss") else "max")
    known = ["val_loss", "train_loss"] + [f"val_{t.name}_{m}" for t in parsed for m in METRIC_NAMES[t.type]]
    if options.metric not in known:
        raise SpaceError(f"--metric {options.metric}: not reported by these tasks (reported: {', '.join(known)})")
    if options.trials < 1 or options.grace_period < 1 or options.reduction_factor <= 1:
        raise SpaceError("--trials and --grace-period must be at least 1, --reduction-factor above 1")
    complete = [Store.open(s).complete_slides() for s in stores]
    table = load_labels(labels, parsed, sorted(set.intersection(*map(set, complete))))
    part = next(iter(plan_splits(table, base.folds, base.seed)))
    resources.require()
    if options.scheduler == "asha":
        _require_state_api()
    per_trial = {
        "CPU": resources.workers * resources.cpus_per_worker,
        "GPU": resources.workers * resources.gpus_per_worker,
    }
    concurrent = min(fitting_count(per_trial), options.max_concurrent or math.inf, options.trials)

    files = open_run(
        out,
        {
            "stores": stores,
            "labels": labels,
            "tasks": tasks,
            "space": searched.describe(),
            "options": asdict(base),
            "sweep": {k: v for k, v in asdict(options).items() if k != "max_concurrent"},
        },
        "a sweep",
        record="sweep.json",
    )
    param_space = {**searched.tune_space(), "store": ray.tune.choice(stores) if len(stores) > 1 else stores[0]}
    fixed = {"sweep": out, "labels": labels, "tasks": tasks, "part": part, "base": asdict(base)}
    # The trial function only waits on its trainer, whose workers hold the trial's resources; a
    # placement group cannot be empty, so it holds one byte of memory and no CPU.
    trainable = ray.tune.with_resources(functools.partial(trial, **fixed, resources=asdict(resources)), {"memory": 1})
    tuner = _tuner(files, trainable, param_space, options, base.epochs, base.seed, mode, concurrent)
    results = tuner.fit()
    # Trials are named by their ids; one without an error or a model was stopped by ASHA.
    runs = [RunFiles(f"{files.url}/trials/{os.path.basename(r.path)}") for r in results]
    stopped = [r.error is None and not run.exists(part, "model", "config.json") for r, run in zip(results, runs)]
    for run in itertools.compress(runs, stopped):
        keep_stopped(run.url)  # its best epoch so far, as a model evaluate and predict take

    rows = [
        _row(r, run, was_stopped, part, options, mode, base.epochs, searched.dimensions)
        for r, run, was_stopped in zip(results, runs, stopped)
    ]
    rows.sort(key=lambda r: _ordering(r[options.metric], mode))
    trials = pa.Table.from_pylist(rows)
    write_parquet(trials, f"{files.url}/trials.parquet")
    best = rows[0]
    if math.isnan(best[options.metric]):
        raise NicError(f"{out}: no trial reported {options.metric}; see {out}/trials.parquet")
    if files.exists("best"):
        files.fs.rm(files.path("best"), recursive=True)
    files.fs.copy(files.path("trials", best["trial_id"]), files.path("best"), recursive=True)
    best_options = {**asdict(base), **trial_options({k: best[k] for k in searched.dimensions})}
    command = shlex.join(
        ["nic-ray", "train", "--store", best["store"], "--labels", labels]
        + [a for t in tasks for a in ("--task", t)]
        + ["--out", "RUN", *as_flags(best_options, TrainOptions)]
    )
    return SweepResult(out, part, trials, best, command)


def _tuner(
    files: RunFiles,
    trainable,
    param_space: dict,
    options: SweepOptions,
    epochs: int,
    seed: int,
    mode: str,
    concurrent: int,
) -> ray.tune.Tuner:
    """The sweep's Tuner: restored from the sweep's storage where a run of it began, else new."""
    storage_path, filesystem = files.ray_storage()
    experiment = files.path("tune")
    if ray.tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
        return ray.tune.Tuner.restore(experiment, trainable, storage_filesystem=filesystem)
    scheduler = (
        AsyncHyperBandScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=min(options.grace_period, epochs),
            reduction_factor=options.reduction_factor,
            stop_last_trials=False,  # a trial at the last epoch ends itself, writing its model
        )
        if options.scheduler == "asha"
        else FIFOScheduler()
    )
    return ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=options.metric,
            mode=mode,
            search_alg=_searcher(options.search, seed, concurrent),
            scheduler=scheduler,
            num_samples=options.trials,
            max_concurrent_trials=None if options.search == "random" else concurrent,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=ray.tune.RunConfig(
            name="tune",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[TrialProgress(options.trials, options.metric, mode)],
        ),
    )


class TrialProgress(ray.tune.Callback):
    """The sweep's trials as one `Progress` bar on the driver: ended trials of all runs of it, the
    best metric so far. Tune pickles its callbacks with the experiment: the bar is not kept."""

    def __init__(self, total: int, metric: str, mode: str):
        self.total, self.metric, self.mode, self.bar = total, metric, mode, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bar": None}

    def _show(self, trials: list) -> None:
        self.bar = self.bar or Progress(total=self.total, desc="sweep", unit="trial")
        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        scores = [t.last_result.get(self.metric, math.nan) for t in ended]
        scores = [v for v in scores if v == v]
        if scores:
            best = min(scores) if self.mode == "min" else max(scores)
            self.bar.set_postfix_str(f"best {self.metric} {best:.4g}", refresh=False)
        self.bar.update(len(ended) - self.bar.n)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._show(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._show(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self.bar is not None:
            self.bar.close()


def _require_state_api() -> None:
    """Ray Train frees a stopped trial's workers once the state API says its controller died;
    without the API (Ray started without its dashboard) they would hold their CPUs for good."""
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    try:
        list_actors(limit=1, timeout=30, raise_on_missing_output=False)
    except (RayStateApiException, ConnectionError) as e:
        raise NicError(
            f"--scheduler asha needs Ray's state API to free the workers of stopped trials, and it does not answer "
            f"({str(e).splitlines()[0][:120]}); start Ray with its dashboard, or use --scheduler none"
        ) from None


def _searcher(name: str, seed: int, concurrent: int):
    if name == "random":  # Tune's max_concurrent_trials leaves it unbounded: it bounds itself
        return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed)


def trial(config: dict, sweep: str, labels: str, tasks: list[str], part: str, base: dict, resources: dict) -> None:
    """One trial: train ``part`` with the base options and the trial's, in the trial's own run."""
    run = f"{sweep}/trials/{ray.tune.get_context().get_trial_id()}"
    options = {**base, **trial_options(config), **resources}
    train(config["store"], labels, tasks, run, parts=[part], callbacks=[TuneReportCallback()], **options)
    # A trial restarted after its training ended (a resumed sweep) reports no epoch: Tune needs one.
    ray.tune.report(read_table(f"{run}/{part}/history.csv", "trial history").to_pylist()[-1])


def _ordering(value: float, mode: str) -> float:
    """Sort key: the best first, trials without the metric last."""
    return math.inf if math.isnan(value) else value if mode == "min" else -value


def _asha_rung(epoch: int, grace: int, factor: float) -> int:
    """The last of ASHA's rungs (grace × factor^k epochs) at or below ``epoch``.

    >>> _asha_rung(2, 1, 4), _asha_rung(5, 1, 4), _asha_rung(9, 2, 2)
    (1, 4, 8)
    """
    rung = grace
    while rung * factor <= epoch:
        rung *= factor
    return int(rung)


def _row(
    result, run: RunFiles, stopped: bool, part: str, options: SweepOptions, mode: str, epochs: int, dimensions: dict
) -> dict:
    """A trial's row: its metric and epochs are those of its own history (a stopped trial may have
    trained an epoch more than Tune heard of before it stopped it)."""
    metric = options.metric
    history = read_table(f"{run.url}/{part}/history.csv", "trial history") if run.exists(part, "history.csv") else None
    values = [] if history is None else [v for v in history.column(metric).to_pylist() if v == v]
    ran = 0 if history is None else history.num_rows
    if result.error is not None:
        status, why = "error", str(result.error).strip().splitlines()[-1][:500]
    elif stopped:
        # ASHA stops a trial at a rung; its workers train on until they hear of it, an epoch or two
        # on epochs of seconds, so the rung is the last one its history reached.
        rung = _asha_rung(ran, min(options.grace_period, epochs), options.reduction_factor)
        status, why = "stopped", f"ASHA at epoch {rung}: below the cut of its rung"
    else:
        status, why = "finished", ""
    if status == "finished":
        why = (
            f"all {epochs} epochs" if ran == epochs else "early stopping (--patience epochs without a better val_loss)"
        )
    return {
        "trial_id": os.path.basename(run.url),
        "store": result.config.get("store"),
        **{name: result.config.get(name) for name in dimensions},
        "status": status,
        "stopped_by": why,
        "epochs": ran,
        metric: (min(values) if mode == "min" else max(values)) if values else math.nan,
        "run": run.url,
    }
