"""Metrics of slide-level predictions, per task type, with bootstrap confidence intervals.

Predictions are the heads' raw outputs averaged over test views: logits for classification,
the value for regression, the log-hazard (risk, higher = worse) for survival.
"""

from __future__ import annotations

import numpy as np
from lifelines.utils import concordance_index
from scipy.special import expit, softmax
from scipy.stats import mannwhitneyu, pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

# The metrics `task_metrics` reports for each task type (as ``val_<task>_<metric>`` in training).
METRIC_NAMES = {
    "binary": ("auc", "accuracy"),
    "multiclass": ("auc", "accuracy"),
    "regression": ("spearman", "pearson"),
    "survival": ("c_index",),
}


def c_index(time, risk, event) -> float:
    """Harrell's C-index of ``risk`` (higher = worse), computed by lifelines.

    lifelines expects scores where higher means longer survival, so the risk is negated here:
    mixing the two conventions silently gives 1 − C.

    >>> c_index([1, 2, 3], [3.0, 2.0, 1.0], [1, 1, 1])
    1.0
    """
    return float(concordance_index(np.asarray(time), -np.asarray(risk, dtype=float), np.asarray(event)))


def _known(target: np.ndarray) -> np.ndarray:
    return ~np.isnan(target.reshape(len(target), -1)).any(axis=1)


def task_metrics(task_type: str, target: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Metrics of one task on slides with a label: AUC and accuracy (binary, multiclass),
    Spearman and Pearson (regression), C-index (survival). A metric undefined on these slides
    (one class only, no events, constant values) is NaN.

    >>> task_metrics("binary", np.array([0.0, 1.0, 1.0]), np.array([[-1.0], [2.0], [-0.5]]))
    {'auc': 1.0, 'accuracy': 0.6666666666666666, 'n': 3}
    """
    known = _known(target)
    target, output = target[known], output[known]
    out: dict[str, float] = {}
    if task_type == "survival":
        try:
            out["c_index"] = c_index(target[:, 0], output[:, 0], target[:, 1])
        except ZeroDivisionError:  # lifelines: no comparable pair (no events, or all tied)
            out["c_index"] = np.nan
    elif task_type == "regression":
        constant = len(target) < 2 or np.ptp(target) == 0 or np.ptp(output[:, 0]) == 0
        out["spearman"] = np.nan if constant else float(spearmanr(target, output[:, 0]).statistic)
        out["pearson"] = np.nan if constant else float(pearsonr(target, output[:, 0]).statistic)
    else:
        classes = output.shape[1]
        probs = expit(output[:, 0]) if task_type == "binary" else softmax(output, axis=1)
        predicted = (probs > 0.5).astype(int) if task_type == "binary" else probs.argmax(axis=1)
        every_class = len(np.unique(target)) == max(classes, 2)
        if not every_class:
            out["auc"] = np.nan
        elif task_type == "binary":
            # The Mann–Whitney U of the positives over n₁n₀ is the AUC (ties count a half), at a
            # quarter of roc_auc_score's cost: it runs once a bootstrap resample.
            positive = target == 1
            u = mannwhitneyu(probs[positive], probs[~positive], method="asymptotic").statistic
            out["auc"] = float(u / (positive.sum() * (~positive).sum()))
        else:
            out["auc"] = float(roc_auc_score(target, probs, multi_class="ovr", labels=range(classes)))
        out["accuracy"] = float((predicted == target).mean())
    out["n"] = int(known.sum())
    return out


def bootstrap_intervals(
    task_type: str, target: np.ndarray, output: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each metric over ``resamples`` resamplings of the slides."""
    known = _known(target)
    target, output = target[known], output[known]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = rng.integers(len(target), size=len(target))
        for name, value in task_metrics(task_type, target[pick], output[pick]).items():
            samples.setdefault(name, []).append(value)
    samples.pop("n", None)
    return {
        name: tuple(float(q) for q in np.nanpercentile(v, [2.5, 97.5])) if not np.isnan(v).all() else (np.nan, np.nan)
        for name, v in samples.items()
    }
