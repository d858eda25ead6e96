"""How slides are split into train, validation and test.

Three sources, in order: the label table's ``split`` column (one model); its ``fold`` column;
or k folds drawn with a seed, stratified by the first classification task (or the survival
event). With a ``patient_id`` column, a patient's slides always share one role: drawn folds
keep them together, and split or fold columns that part them are refused (`load_labels`).
Folds rotate as in NIC: for fold f, test = f, validation = f + 1 (mod k), train = the rest; with
k = 4 that is 2 train, 1 validation, 1 test, and every slide is tested exactly once.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from nic_ray.train.labels import LabelError, Labels


def assign_folds(
    n: int, k: int, seed: int, strata: np.ndarray | None = None, groups: np.ndarray | None = None
) -> np.ndarray:
    """(n,) fold of each slide in 0..k-1, stratified by ``strata`` when every stratum has k members;
    the slides of one of ``groups`` (patients) in one fold.

    >>> np.bincount(assign_folds(8, 4, seed=0)).tolist()  # 2 slides a fold
    [2, 2, 2, 2]
    """
    index = np.zeros((n, 1))
    if groups is not None:
        splits = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(
            index, np.zeros(n) if strata is None else strata, groups
        )
    elif strata is not None and np.unique(strata, return_counts=True)[1].min() >= k:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(index, strata)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(index)
    folds = np.empty(n, int)
    for f, (_, test) in enumerate(splits):
        folds[test] = f
    return folds


def _strata(labels: Labels) -> np.ndarray | None:
    for task in labels.tasks:
        values = labels.values[task.name]
        if task.type in ("binary", "multiclass"):
            return np.array([-1 if v != v else v for v in values])
        if task.type == "survival":
            return np.array([-1 if e != e else e for _, e in values])
    return None


def plan_splits(labels: Labels, folds: int = 4, seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """Part name ("single" or "fold-<f>") → {"train", "val", "test"} → slide ids."""
    ids = np.array(labels.slide_ids)
    if labels.split is not None:
        split = np.array(labels.split)
        return {"single": {s: ids[split == s].tolist() for s in ("train", "val", "test")}}
    if labels.fold is not None:
        fold = np.unique(labels.fold, return_inverse=True)[1]
    else:
        groups = None if labels.patients is None else np.unique(labels.patients, return_inverse=True)[1]
        count = len(ids) if groups is None else int(groups.max()) + 1
        fold = assign_folds(len(ids), min(folds, count), seed, _strata(labels), groups)
    k = int(fold.max()) + 1
    if k < 3:
        raise LabelError(f"cross-validation needs at least 3 folds (train, validation, test), not {k}")
    return {
        f"fold-{f}": {
            "train": ids[(fold != f) & (fold != (f + 1) % k)].tolist(),
            "val": ids[fold == (f + 1) % k].tolist(),
            "test": ids[fold == f].tolist(),
        }
        for f in range(k)
    }
