"""Training slide-level models on a store with Ray Train: one model per part (split or fold).

Each part is a `TorchTrainer` run named after the part in the run directory: a checkpoint
every epoch, `max_failures` restarts of a failed worker group from the last checkpoint, and a
restarted command resumes where the last checkpoint left off. Adam with the NIC schedule
(learning rate × 1/3 after ``lr_patience`` epochs without a better validation loss, down to
``min_lr``) and early stopping after ``patience`` such epochs. The best epoch's weights become
the part's model.

Example::

    result = train("brca.zarr", "labels.csv", ["grade:multiclass:grade", "os:survival:time,event"],
                   out="runs/brca", epochs=30, workers=2)
    result.parts["fold-0"]["val_loss"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import ray.train
import ray.train.torch
import torch
from ray.train import UserCallback

from nic_ray.errors import NicError
from nic_ray.options import split_options
from nic_ray.progress import Progress
from nic_ray.ray_metrics import TrainingMetrics
from nic_ray.runtime.checkpoint import snapshot
from nic_ray.runtime.resources import Resources
from nic_ray.runtime.run_files import RunFiles
from nic_ray.runtime.trainer import fit, last_checkpoint, open_run, report_epoch, restore, worker_setup
from nic_ray.slides.cache import absolute
from nic_ray.store import Store
from nic_ray.train.dataset import CropDataset, CropLoader, Draws, balanced_weights
from nic_ray.train.labels import Labels, Task, load_labels, parse_task
from nic_ray.train.losses import step_loss, task_loss
from nic_ray.train.metrics import task_metrics
from nic_ray.train.nic_cnn import NICNet, default_strides, smallest_crop
from nic_ray.train.options import MIN_STEPS, TrainOptions
from nic_ray.train.prediction import model_tasks, predict_outputs
from nic_ray.train.splits import plan_splits


@dataclass
class TrainResult:
    run: str
    parts: dict[str, dict] = field(default_factory=dict)  # part → metrics of its best epoch
    not_in_store: list[str] = field(default_factory=list)
    not_in_table: list[str] = field(default_factory=list)


def train(
    store: str,
    labels: str,
    tasks: list[str | Task],
    out: str,
    *,
    parts: list[str] | None = None,
    callbacks: Sequence[UserCallback] = (),
    **kwargs,
) -> TrainResult:
    """Train on the complete slides of ``store`` labelled in ``labels``; see `TrainOptions`, `Resources`.
    ``parts`` trains only those of the planned parts (a sweep tunes on one); ``callbacks`` go to
    each part's Ray Train run (a sweep's reports to Tune)."""
    options, resources = split_options(kwargs, TrainOptions, Resources)
    options.strides = tuple(options.strides) or default_strides(options.crop_size)
    if smallest_crop(options.strides) > options.crop_size:
        raise NicError(
            f"--strides {' '.join(map(str, options.strides))} need crops of at least "
            f"{smallest_crop(options.strides)} cells, more than --crop-size {options.crop_size}; give fewer or "
            "smaller strides, or leave --strides out to follow the crop size"
        )
    if resources.loader_workers < 1:
        raise NicError(f"--loader-workers {resources.loader_workers}: crops need at least one loader thread")
    if options.batch_size // resources.workers < 2:
        raise NicError(f"--batch-size {options.batch_size} gives fewer than 2 crops per worker; BatchNorm needs 2")
    store = absolute(store)  # workers run elsewhere
    source = Store.open(store)
    table = load_labels(labels, [parse_task(t) if isinstance(t, str) else t for t in tasks], source.complete_slides())
    if options.balance and options.balance not in [t.name for t in table.tasks]:
        raise NicError(f"--balance {options.balance}: no such task")
    planned = plan_splits(table, options.folds, options.seed)
    if unknown := set(parts or []) - set(planned):
        raise NicError(f"no part {', '.join(sorted(unknown))} in this split (parts: {', '.join(planned)})")
    splits = {part: split for part, split in planned.items() if parts is None or part in parts}
    files = open_run(
        out,
        {
            "store": str(store),
            "labels": str(labels),
            "tasks": [asdict(t) for t in table.tasks],
            "options": asdict(options),
            "parts": list(splits),
            "splits": splits,
        },
        "a run",
    )
    resources.require()
    result = TrainResult(str(out), not_in_store=table.not_in_store, not_in_table=table.not_in_table)
    for part, split in splits.items():
        if not files.exists(part, "model", "config.json"):
            _fit(files, part, split, source, table, options, resources, callbacks)
        result.parts[part] = files.read_json(f"{part}/model/config.json")["best"]
    return result


def _fit(
    files: RunFiles,
    part: str,
    split: dict,
    store: Store,
    labels: Labels,
    options: TrainOptions,
    resources: Resources,
    callbacks: Sequence[UserCallback] = (),
) -> None:
    described = _described(store, labels, options, split)
    config = {
        "run": files.url,
        "store": store.url,
        "part": part,
        "model": described["model"],
        "tasks": described["tasks"],
        "train_ids": split["train"],
        "val_ids": split["val"],
        "options": asdict(options),
        "train_targets": labels.targets(split["train"], described["scaling"]),
        "val_targets": labels.targets(split["val"], described["scaling"]),
        "balance": balanced_task(options, labels.tasks),
        "loader_workers": resources.loader_workers,
    }
    state, weights = last_checkpoint(fit(files, part, train_loop, config, resources, callbacks=callbacks))
    _save_best(files, part, state, weights, described)


def _described(store: Store, labels: Labels, options: TrainOptions, split: dict) -> dict:
    """What a part's finished model says of itself, but its best epoch."""
    return {
        "model": {
            "in_channels": store.config.encoder["code_size"],
            "heads": {t.name: t.outputs for t in labels.tasks},
            "width": options.width,
            "strides": list(options.strides),
            "dropout": options.dropout,
        },
        "tasks": [asdict(t) for t in labels.tasks],
        "scaling": labels.scaling(split["train"]),
        "crop_size": options.crop_size,
        "store": asdict(store.config),
        "trained_on": store.url,
    }


def _save_best(files: RunFiles, part: str, state: dict, weights: dict, described: dict) -> None:
    history = state["history"]
    files.write_csv(f"{part}/history.csv", history)
    best = next(h for h in history if h["epoch"] == state["best_epoch"])
    files.save_model(part, weights["best"], {**described, "best": best})


def keep_stopped(run: str) -> list[str]:
    """Write the model of each part of ``run`` that was stopped before it finished (a sweep's
    early-stopped trial) from its last checkpoint: the best epoch it reached. Returns those parts."""
    files = RunFiles(run)
    asked = files.read_json("run.json")
    store = Store.open(asked["store"])
    options = TrainOptions(**{**asked["options"], "strides": tuple(asked["options"]["strides"])})
    labels = load_labels(asked["labels"], [Task(**t) for t in asked["tasks"]], store.complete_slides())
    kept = []
    for part in asked["parts"]:
        if files.exists(part, "model", "config.json") or not (checkpoint := files.latest_checkpoint(part)):
            continue
        state, weights = checkpoint
        _save_best(files, part, state, weights, _described(store, labels, options, asked["splits"][part]))
        kept.append(part)
    return kept


def _validate(net: NICNet, store: Store, config: dict, tasks: list[Task], device: torch.device) -> dict[str, float]:
    """Validation loss and metrics, the validation slides shared out among the workers."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    options = config["options"]
    ids = config["val_ids"]
    mine = list(range(rank, len(ids), world))
    outputs = predict_outputs(
        net, store, [ids[i] for i in mine], options["crop_size"], options["val_crops"], options["val_views"], device
    )
    gathered = [(mine, outputs)]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (mine, outputs))
    order = np.concatenate([np.array(m, int) for m, _ in gathered])
    metrics, total = {}, 0.0
    for task in tasks:
        out = np.zeros((len(ids), net.config["heads"][task.name]))
        out[order] = np.concatenate([o[task.name] for _, o in gathered])
        target = config["val_targets"][task.name]
        total += float(task_loss(task.type, torch.from_numpy(out), torch.tensor(target)))
        for name, value in task_metrics(task.type, target, out).items():
            if name != "n":
                metrics[f"val_{task.name}_{name}"] = value
    return {"val_loss": total, **metrics}


def balanced_task(options: TrainOptions, tasks: list[Task]) -> str:
    """The task whose classes training batches balance: ``--balance``, else the first
    classification task, else none ("")."""
    return options.balance or next((t.name for t in tasks if t.type in ("binary", "multiclass")), "")


def training_draws(config: dict, per_worker: int, rank: int) -> Draws:
    """A worker's (slide, seed) draws of an epoch: every class of the balanced task drawn as
    often (a missing label is a class of its own), else every training slide as often."""
    ids, options = config["train_ids"], config["options"]
    steps = options["steps_per_epoch"] or max(MIN_STEPS, math.ceil(len(ids) / options["batch_size"]))
    groups = config["train_targets"].get(config["balance"])
    chances = balanced_weights(groups) if groups is not None else np.full(len(ids), 1 / len(ids))
    return Draws(chances, steps * per_worker, options["seed"], rank)


def train_loop(config: dict) -> None:
    """One Ray Train worker: train one part, reporting (and checkpointing) every epoch."""
    rank, world, device = worker_setup()
    options = config["options"]
    torch.manual_seed(options["seed"])
    tasks = model_tasks(config)
    net = NICNet(**config["model"])
    model = ray.train.torch.prepare_model(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=1 / 3, patience=options["lr_patience"], min_lr=options["min_lr"]
    )
    state, weights = restore({"adam": optimizer}, {"epoch": 0, "best_epoch": 0, "best_loss": math.inf, "history": []})
    if weights:
        net.load_state_dict(weights["model"])
        scheduler.load_state_dict(state.pop("scheduler"))
    best = weights.get("best") or snapshot(net.state_dict())

    per_worker = options["batch_size"] // world
    types = {t.name: t.type for t in tasks}
    draws = training_draws(config, per_worker, rank)
    data = CropDataset(
        config["store"], config["train_ids"], config["train_targets"], options["crop_size"], options["grid_dihedral"]
    )
    loader = CropLoader(data, draws, per_worker, config["loader_workers"], pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    # Rank 0 shows it; a line an epoch in the job's log, steps only where an epoch takes long.
    epochs = Progress(
        total=options["epochs"],
        initial=state["epoch"],
        desc=f"train {config['part']}",
        unit="epoch",
        disable=rank != 0,
        log_every=0,
    )
    published = TrainingMetrics(config["run"], config["part"]) if rank == 0 else None
    while state["epoch"] < options["epochs"] and state["epoch"] - state["best_epoch"] < options["patience"]:
        start, waited, losses = time.perf_counter(), 0.0, []
        draws.set_epoch(state["epoch"])
        model.train()
        ready = time.perf_counter()
        steps = Progress(loader, desc=f"epoch {state['epoch'] + 1}", unit="step", leave=False, disable=rank != 0)
        for crops, targets in steps:
            waited += time.perf_counter() - ready
            with autocast:
                outputs = model(crops.to(device, non_blocking=True).float())
            loss = step_loss(types, outputs, {name: target.to(device) for name, target in targets.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            ready = time.perf_counter()
        train_loss = float(np.mean(losses))
        validation = (
            _validate(net, data.store, config, tasks, device) if config["val_ids"] else {"val_loss": train_loss}
        )
        scheduler.step(validation["val_loss"])
        state["epoch"] += 1
        if validation["val_loss"] < state["best_loss"]:
            state["best_loss"], state["best_epoch"] = validation["val_loss"], state["epoch"]
            best = snapshot(net.state_dict())
        metrics = {
            "epoch": state["epoch"],
            "train_loss": train_loss,
            **validation,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
            "loader_wait": waited / (time.perf_counter() - start),
            "starts": state["starts"],
        }
        state["history"].append(metrics)
        watched = {k: v for k, v in metrics.items() if "loss" in k or k.startswith("val_")}
        epochs.set_postfix({k: f"{v:.4g}" for k, v in watched.items()}, refresh=False)
        epochs.update(1)
        if published:
            published.epoch_ended(metrics["epoch"], watched)
        report_epoch(
            metrics,
            {"model": net.state_dict(), "best": best},
            {"adam": optimizer},
            {**state, "scheduler": scheduler.state_dict()},
        )
    epochs.close()
