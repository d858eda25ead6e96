"""Metrics of a trained run on labelled slides, with bootstrap 95% intervals.

A run with one model reports the slides of each of its splits (train, val, test) and any other
labelled slide ("external"). A cross-validated run predicts each slide with the fold model that
never saw it and reports each fold's test set and the pooled out-of-fold predictions ("all",
the NIC paper's "All" set); slides outside every fold are predicted by the folds' average.
Beside the metrics, each slide's (or patient's) label and raw output per subset and task, from
which reports draw ROC, calibration and survival curves.

Example::

    table = evaluate("runs/brca", "brca.zarr", "labels.csv")
    print(format_evaluation(table))
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from nic_ray.options import split_options
from nic_ray.store import Store
from nic_ray.tables import write_parquet
from nic_ray.train.labels import load_labels
from nic_ray.train.metrics import bootstrap_intervals, task_metrics
from nic_ray.train.options import EvaluateOptions
from nic_ray.train.prediction import model_outputs, model_tasks, patient_means, run_models


def _subsets(run: dict, parts: list[str], labelled: list[str]) -> dict[str, dict[str, list[str]]]:
    """Subset name → part (or "*" for the average of all parts) → slide ids it predicts."""
    splits, known = run["splits"], set(labelled)
    seen = {s for split in splits.values() for ids in split.values() for s in ids}
    subsets: dict[str, dict[str, list[str]]] = {}
    if parts == ["single"]:
        for name, ids in splits["single"].items():
            subsets[name] = {"single": [s for s in ids if s in known]}
    else:
        for part in parts:
            subsets[f"{part} test"] = {part: [s for s in splits[part]["test"] if s in known]}
        subsets["all (out-of-fold)"] = {p: ids[p] for ids in list(subsets.values()) for p in ids}
    subsets["external"] = {"*": [s for s in labelled if s not in seen]}
    return {name: by_part for name, by_part in subsets.items() if any(by_part.values())}


def evaluate(run: str, store: str, labels: str, out: str | None = None, **options) -> pa.Table:
    """One row per (subset, task, metric): value, 95% bootstrap interval, slides (or patients,
    with ``per_patient``: outputs averaged over a patient's slides). Written to ``out`` (default
    ``<run>/evaluation.parquet``); the slides' labels and outputs beside it (`outputs_path`).
    ``options`` are `EvaluateOptions`."""
    (opts,) = split_options(options, EvaluateOptions)
    target = Store.open(store)
    files, models = run_models(run, target)
    description, parts = files.read_json("run.json"), list(models)
    config = next(iter(models.values()))[1]
    tasks = model_tasks(config)
    table = load_labels(labels, tasks, target.complete_slides())
    rows, per_slide = [], []
    for subset, by_part in _subsets(description, parts, table.slide_ids).items():
        ids = [s for part_ids in by_part.values() for s in part_ids]
        outputs: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
        for part, part_ids in by_part.items():
            used = list(models.values()) if part == "*" else [models[part]]
            predicted = [
                model_outputs(net, cfg, target, part_ids, opts.crops, opts.views, desc=f"evaluate {subset}")
                for net, cfg in used
            ]
            for name in outputs:
                outputs[name].append(np.mean([p[name] for p in predicted], axis=0))
        targets = table.targets(ids)
        merged = {name: np.concatenate(parts) for name, parts in outputs.items()}
        if opts.per_patient:
            patients = table.patients_of(ids)
            _, targets = patient_means(patients, table.patient_targets(ids, targets))
            ids, merged = patient_means(patients, merged)
        for task in tasks:
            output = merged[task.name]
            per_slide += [
                {"subset": subset, "id": i, "task": task.name, "target": t.reshape(-1).tolist(), "output": o.tolist()}
                for i, t, o in zip(ids, targets[task.name], output)
            ]
            values = task_metrics(task.type, targets[task.name], output)
            intervals = bootstrap_intervals(task.type, targets[task.name], output, opts.resamples, opts.seed)
            for metric, (low, high) in intervals.items():
                rows.append(
                    {
                        "subset": subset,
                        "task": task.name,
                        "metric": metric,
                        "value": values[metric],
                        "low": low,
                        "high": high,
                        "slides": values["n"],
                    }
                )
    result = pa.Table.from_pylist(rows)
    out = out or f"{files.url}/evaluation.parquet"
    write_parquet(result, out)
    write_parquet(pa.Table.from_pylist(per_slide), outputs_path(out))
    return result


def outputs_path(evaluation: str) -> str:
    """Where the slides' labels and outputs of the evaluation table ``evaluation`` are written.

    >>> outputs_path("runs/brca/evaluation.parquet")
    'runs/brca/evaluation-outputs.parquet'
    """
    return evaluation.removesuffix(".parquet") + "-outputs.parquet"


def format_evaluation(table: pa.Table) -> str:
    """The evaluation as aligned text lines."""
    lines = [f"{'subset':22} {'task':14} {'metric':9} {'value':>7}  {'95% CI':17} {'slides':>6}"]
    for r in table.to_pylist():
        lines.append(
            f"{r['subset']:22} {r['task']:14} {r['metric']:9} {r['value']:7.3f}  "
            f"[{r['low']:6.3f}, {r['high']:6.3f}] {r['slides']:6d}"
        )
    return "\n".join(lines)
