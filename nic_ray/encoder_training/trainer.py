"""Training encoders with Ray Train: VAE, contrastive, BiGAN from slides; multitask from patch sets.

Patches of slides stream through Ray Data (`nic_ray.encoder_training.patches`: planned once, read each
epoch, shuffled locally) into a `TorchTrainer` loop; labelled patch sets (multitask) are split
among the workers. Gradients are averaged over workers after each group's backward pass (the
BiGAN steps two groups a batch, which DDP's one-backward bookkeeping does not allow). A
checkpoint every epoch (safetensors + JSON) lets Ray restart failed workers, and the same
command again resume, where they stopped.

```
<out>/run.json            what was asked (a rerun must ask the same)
<out>/train/              Ray Train's checkpoints
<out>/history.csv         loss curves, one row an epoch
<out>/report.json         method, options, classes, slides left out (with reasons), history
<out>/encoder/            the trained encoder: nic-ray compress --encoder <out>/encoder
```

Example::

    result = train_encoder("vae", "runs/vae", slides=["slides/"], epochs=20, workers=2)
    load_encoder(result.encoder)
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import ray
import ray.data
import ray.train
import torch

from nic_ray.encoder_training.objectives import build_objective, list_objectives
from nic_ray.encoder_training.options import EncoderOptions
from nic_ray.encoder_training.patches import PatchSampling, load_patch_set, make_pairs, plan_patches, read_patches
from nic_ray.encoders import create_encoder, save_encoder
from nic_ray.errors import NicError
from nic_ray.options import split_options
from nic_ray.runtime.resources import Resources
from nic_ray.runtime.run_files import RunFiles
from nic_ray.runtime.trainer import fit, last_checkpoint, open_run, report_epoch, restore, worker_setup
from nic_ray.slides import expand_sources


@dataclass
class EncoderResult:
    run: str
    encoder: str  # the checkpoint directory
    history: list[dict] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # slide → why


def train_encoder(
    method: str, out: str, slides: list[str] | None = None, tasks: dict[str, str] | None = None, **kwargs
) -> EncoderResult:
    """Train a NIC encoder by ``method`` (vae, contrastive, bigan from ``slides``; multitask from
    ``tasks``, name → labelled patch set) into ``<out>/encoder``; see `EncoderOptions`, `Resources`."""
    options, resources = split_options(kwargs, EncoderOptions, Resources)
    if method not in list_objectives():
        raise NicError(f"unknown --method {method!r}: expected one of {', '.join(list_objectives())}")
    if (method == "multitask") != bool(tasks) or (method != "multitask") != bool(slides):
        raise NicError("--method multitask trains on --task NAME=PATCHES; the others on --slides")
    if "://" in str(out):
        raise NicError(f"{out}: encoder runs are written to a local (or mounted shared) directory")
    if options.batch_size // resources.workers < 2 * max(1, len(tasks or {})):
        raise NicError(
            f"--batch-size {options.batch_size}: fewer than 2 patches per task and worker; BatchNorm needs 2"
        )
    out = os.path.abspath(out)
    files = open_run(
        out, {"method": method, "slides": slides, "tasks": tasks, "options": asdict(options)}, "an encoder run"
    )
    resources.require()
    if not files.exists("encoder", "config.json"):
        datasets, data, left_out = _datasets(method, slides, tasks, options)
        history = _fit(files, method, data, datasets, options, resources)
        files.write_csv("history.csv", history)
        files.write_json(
            "report.json",
            {"method": method, "options": asdict(options), "left_out": left_out, **data, "history": history},
        )
    report = files.read_json("report.json")
    return EncoderResult(out, files.path("encoder"), report["history"], report["left_out"])


def _datasets(
    method: str, slides: list[str] | None, tasks: dict[str, str] | None, options: EncoderOptions
) -> tuple[dict[str, ray.data.Dataset], dict, dict[str, str]]:
    """(Ray datasets, what the loop needs to know of them, slides left out with reasons)."""
    if method == "multitask":
        sets = {name: load_patch_set(source, options.mpp, options.patch_size) for name, source in tasks.items()}
        datasets = {
            name: ray.data.from_items([{"patch": p, "label": int(y)} for p, y in zip(s.patches, s.labels)])
            for name, s in sets.items()
        }
        return (
            datasets,
            {
                "classes": {name: s.classes for name, s in sets.items()},
                "sizes": {name: len(s.labels) for name, s in sets.items()},
            },
            {},
        )
    sampling = PatchSampling(options.mpp, options.patch_size, options.per_slide, options.tissue, options.seed)
    sources = expand_sources(slides)
    items = [{"slide": i, "url": s.url, "mpp": math.nan if s.mpp is None else s.mpp} for i, s in enumerate(sources)]
    planned = (
        ray.data.from_items(items, override_num_blocks=min(len(items), 64))
        .flat_map(plan_patches, fn_kwargs={"sampling": sampling})
        .take_all()
    )
    left_out = {sources[r["slide"]].slide_id: r["error"] for r in planned if r["error"]}
    rows = [r for r in planned if not r["error"]]
    if not rows:
        raise NicError(f"no patches to train on: every slide was left out ({'; '.join(left_out.values())})")
    # Round-robin over slides: every block, and so every shuffled batch, mixes slides.
    seen: dict[int, int] = defaultdict(int)
    for r in rows:
        r["order"], seen[r["slide"]] = seen[r["slide"]], seen[r["slide"]] + 1
    rows.sort(key=lambda r: (r["order"], r["slide"]))
    patches = ray.data.from_items(rows).map_batches(read_patches, fn_kwargs={"sampling": sampling}, batch_size=64)
    return {"patches": patches}, {"patches": len(rows), "slides": len(sources) - len(left_out)}, left_out


def _fit(
    files: RunFiles, method: str, data: dict, datasets: dict, options: EncoderOptions, resources: Resources
) -> list[dict]:
    config = {"method": method, "options": asdict(options), "data": data, "prefetch": resources.loader_workers}
    state, weights = last_checkpoint(fit(files, "train", encoder_train_loop, config, resources, datasets))
    objective = _objective(config)
    objective.load_state_dict(weights["objective"])
    save_encoder(objective.encoder, files.path("encoder"))
    return state["history"]


def _objective(config: dict):
    options = config["options"]
    encoder = create_encoder(
        "nic",
        seed=options["seed"],
        code_size=options["code_size"],
        width=options["width"],
        patch_size=options["patch_size"],
        mpp=options["mpp"],
    )
    extra = (
        {"tasks": {name: len(c) for name, c in config["data"]["classes"].items()}}
        if config["method"] == "multitask"
        else {"gamma": options["gamma"]}
        if config["method"] == "vae"
        else {}
    )
    return build_objective(config["method"], encoder, **extra)


def _average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _slide_batches(config: dict, per_worker: int, rng: np.random.Generator):
    shard = ray.train.get_dataset_shard("patches")
    for batch in shard.iter_batches(
        batch_size=per_worker,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=per_worker * 8,
        prefetch_batches=config["prefetch"],
    ):
        yield make_pairs(batch, rng) if config["method"] == "contrastive" else batch


def _task_batches(config: dict, per_worker: int, world: int, rng: np.random.Generator, tasks: dict):
    """Batches with as many patches of every task: smaller tasks are drawn again sooner."""
    per_task = per_worker // len(tasks)
    steps = config["options"]["steps_per_epoch"] or math.ceil(
        max(config["data"]["sizes"].values()) / (per_task * world)
    )
    orders = {name: np.empty(0, int) for name in tasks}
    for _ in range(steps):
        batch = {}
        for name, (patches, labels) in tasks.items():
            if len(orders[name]) < per_task:
                orders[name] = np.concatenate([orders[name], rng.permutation(len(labels))])
            pick, orders[name] = orders[name][:per_task], orders[name][per_task:]
            batch[name] = {"patch": patches[pick], "label": labels[pick]}
        yield batch


def to_device(batch, device: torch.device):
    """A (nested) dict of numpy arrays as tensors on ``device``."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)


def encoder_train_loop(config: dict) -> None:
    """One Ray Train worker: train the objective, reporting (and checkpointing) every epoch."""
    rank, world, device = worker_setup()
    options = config["options"]
    torch.manual_seed(options["seed"])  # the same initial weights on every worker
    objective = _objective(config).to(device)
    optimizers = objective.optimizers(options["lr"])
    state, weights = restore(optimizers, {"epoch": 0, "history": []})
    if weights:
        objective.load_state_dict(weights["objective"])
    per_worker = options["batch_size"] // world
    tasks = {}
    if config["method"] == "multitask":
        for name in config["data"]["classes"]:
            rows = list(ray.train.get_dataset_shard(name).iter_batches(batch_size=None, batch_format="numpy"))
            tasks[name] = (np.concatenate([r["patch"] for r in rows]), np.concatenate([r["label"] for r in rows]))

    while state["epoch"] < options["epochs"]:
        start, sums, steps = time.perf_counter(), defaultdict(float), 0
        # Augmentations and pairs differ per worker and epoch, and do not repeat after a restart.
        torch.manual_seed(options["seed"] * 1_000_003 + state["epoch"] * 1009 + rank)
        rng = np.random.default_rng([options["seed"], state["epoch"], rank])
        batches = (
            _task_batches(config, per_worker, world, rng, tasks) if tasks else _slide_batches(config, per_worker, rng)
        )
        objective.train()
        for batch in batches:
            figures = objective.step(
                to_device(batch, device),
                optimizers,
                options["augment"],
                sync=(lambda params: _average_gradients(params, world)) if world > 1 else None,
            )
            for name, value in figures.items():
                sums[name] += value
            steps += 1
        state["epoch"] += 1
        seconds = time.perf_counter() - start
        metrics = {
            "epoch": state["epoch"],
            **{k: v / max(steps, 1) for k, v in sums.items()},
            "steps": steps,
            "patches_per_s": steps * options["batch_size"] / seconds,
            "seconds": seconds,
            "starts": state["starts"],
        }
        state["history"].append(metrics)
        report_epoch(metrics, {"objective": objective.state_dict()}, optimizers, state)
