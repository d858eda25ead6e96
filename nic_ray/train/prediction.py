"""Slide-level predictions: T crops at evenly spaced tissue positions × the 8 dihedral views.

A view of a store with 8 orientations reads orientation o and turns the crop by o (the slide
as if scanned turned); with 1 orientation the crop is read once and turned (a grid-level
transform). The heads' raw outputs are averaged over all views, then mapped to predictions:
probabilities for classes, the value for regression, the risk (log-hazard) for survival.

Example::

    table = predict("runs/brca", "brca.zarr")  # one row a slide
    table.to_pandas().head()
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import torch
from scipy.special import expit, softmax

from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.dihedral import ORIENTATIONS, dihedral
from nic_ray.options import split_options
from nic_ray.progress import Progress
from nic_ray.runtime.run_files import RunError, RunFiles
from nic_ray.store.store import Store
from nic_ray.tables import read_table, write_parquet
from nic_ray.train.crops import evenly_spaced_centres, keep_on_grid, read_crop
from nic_ray.train.labels import Task
from nic_ray.train.nic_cnn import NICNet
from nic_ray.train.options import TestTimeOptions


def _views(store: Store, slide_id: str, crop_size: int, crops: int, views: int) -> Iterator[np.ndarray]:
    """(views, C, R, R) float32 per centre."""
    array, tissue = store.grid(slide_id)
    orientations = array.shape[0]
    for centre in keep_on_grid(evenly_spaced_centres(tissue, crops), tissue.shape, crop_size):
        if orientations == ORIENTATIONS:
            yield np.stack([read_crop(array, o, centre, crop_size) for o in range(views)])
        else:
            crop = read_crop(array, 0, centre, crop_size)
            yield np.stack([dihedral(crop, o, dims=(1, 2)) for o in range(views)])


def _prefetched(items: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``items``, the next one read in a thread while the caller computes on the current one."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


@torch.no_grad()
def predict_outputs(
    net: NICNet,
    store: Store,
    slide_ids: list[str],
    crop_size: int,
    crops: int = 10,
    views: int = ORIENTATIONS,
    device: torch.device | str = "cpu",
    desc: str = "",
) -> dict[str, np.ndarray]:
    """Task name → (len(slide_ids), outputs) raw head outputs averaged over crops × views; a
    progress bar named ``desc`` where one is given."""
    net.eval()
    sums = {name: np.zeros((len(slide_ids), size)) for name, size in net.config["heads"].items()}
    for i, slide_id in enumerate(Progress(slide_ids, desc=desc, unit="slide", disable=not desc)):
        for batch in _prefetched(_views(store, slide_id, crop_size, crops, views)):
            out = net(torch.from_numpy(batch).to(device))
            for name, value in out.items():
                sums[name][i] += value.float().sum(0).cpu().numpy()
    return {name: total / (crops * views) for name, total in sums.items()}


def model_outputs(
    net: NICNet, config: dict, store: Store, slide_ids: list[str], crops: int, views: int, desc: str = ""
) -> dict[str, np.ndarray]:
    """`predict_outputs` of a trained model, regression values in the target's units (the
    model's own scaling undone): the models of several folds, each with its own scaling, then
    average alike."""
    outputs = predict_outputs(net, store, slide_ids, config["crop_size"], crops, views, desc=desc)
    for name, (mean, std) in config["scaling"].items():
        outputs[name] = outputs[name] * std + mean
    return outputs


def prediction_columns(tasks: list[Task], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns of a prediction table from `model_outputs`: ``<task>`` (positive-class
    probability, value, risk) or ``<task>_<class>`` (class probabilities)."""
    columns = {}
    for task in tasks:
        out = outputs[task.name]
        if task.type == "binary":
            columns[task.name] = expit(out[:, 0])
        elif task.type == "multiclass":
            for c, p in zip(task.classes, softmax(out, axis=1).T):
                columns[f"{task.name}_{c}"] = p
        else:
            columns[task.name] = out[:, 0]
    return columns


def patient_means(patients: list[str], outputs: dict[str, np.ndarray]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(patients in first-seen order, each output averaged over the patient's rows).

    >>> patient_means(["a", "b", "a"], {"y": np.array([[1.0], [5.0], [3.0]])})
    (['a', 'b'], {'y': array([[2.],
           [5.]])})
    """
    names, first, inverse = np.unique(patients, return_index=True, return_inverse=True)
    order = np.argsort(first)  # first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group, counts = rank[inverse], np.bincount(rank[inverse])
    means = {}
    for key, values in outputs.items():
        sums = np.zeros((len(order), *values.shape[1:]))
        np.add.at(sums, group, values)
        means[key] = sums / counts.reshape(-1, *[1] * (values.ndim - 1))
    return [str(p) for p in names[order]], means


def model_tasks(config: dict) -> list[Task]:
    return [Task(t["name"], t["type"], tuple(t["columns"]), tuple(t["classes"])) for t in config["tasks"]]


def check_store(run: RunFiles, config: dict, store: Store) -> None:
    if config["store"] != asdict(store.config):
        raise RunError(
            f"{run.url}: trained on grids of another store configuration than {store.url} "
            f"({store.config.describe()}); compress the slides as the training store was"
        )


def load_model(files: RunFiles, part: str) -> tuple[NICNet, dict]:
    """The part's finished model in eval mode, and its config."""
    config, weights = files.read_model(part)
    net = NICNet(**config["model"])
    net.load_state_dict(weights)
    return net.eval(), config


def run_models(run: str, store: Store) -> tuple[RunFiles, dict[str, tuple[NICNet, dict]]]:
    """The run's files and its finished models by part, each checked against ``store``."""
    files = RunFiles(run)
    models = {part: load_model(files, part) for part in files.parts()}
    if not models:
        raise RunError(f"{run}: no trained model yet; train it first")
    for _, config in models.values():
        check_store(files, config, store)
    return files, models


def chosen_slides(slides: str | None, store: Store) -> tuple[list[str], pa.Table | None]:
    """The slide ids of the ``slides`` table (and the table), or every complete slide of
    ``store``; slides not complete there are refused in one line."""
    complete = store.complete_slides()
    if slides is None:
        return complete, None
    table = read_table(slides, "slide table", RunError)
    if "slide_id" not in table.column_names:
        raise RunError(f"{slides}: needs a slide_id column")
    wanted = [str(s) for s in table.column("slide_id").to_pylist()]
    missing = sorted(set(wanted) - set(complete))
    if missing:
        raise RunError(
            f"{slides}: not complete in {store.url}: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return wanted, table


def predict(run: str, store: str, slides: str | None = None, out: str | None = None, **options) -> pa.Table:
    """Predict every complete slide of ``store`` (or those of the ``slides`` table's ``slide_id``)
    with the run's model; a cross-validated run averages its fold models. Writes ``out`` if given.
    ``options`` are `TestTimeOptions`."""
    (seen,) = split_options(options, TestTimeOptions)
    reuse_freed_memory()
    target = Store.open(store)
    _, by_part = run_models(run, target)
    models = list(by_part.values())
    slide_ids, table = chosen_slides(slides, target)
    outputs = [
        model_outputs(net, config, target, slide_ids, seen.crops, seen.views, desc="predict") for net, config in models
    ]
    mean = {name: np.mean([o[name] for o in outputs], axis=0) for name in outputs[0]}
    keys = {"slide_id": slide_ids}
    if seen.per_patient:
        if table is None or "patient_id" not in table.column_names:
            raise RunError("--per-patient: give --slides a table with slide_id and patient_id columns")
        patients = [str(p) for p in table.column("patient_id").to_pylist()]
        keys["patient_id"], mean = patient_means(patients, mean)
        counts = Counter(patients)
        keys["slides"] = [counts[p] for p in keys["patient_id"]]
        del keys["slide_id"]
    columns = prediction_columns(model_tasks(models[0][1]), mean)
    result = pa.table({**keys, **columns})
    if out is not None:
        write_parquet(result, out)
    return result
