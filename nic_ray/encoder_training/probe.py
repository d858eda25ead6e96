"""Probing an encoder (the NIC paper's Table 1 protocol): freeze it, embed a labelled patch set,
train a small classifier on the embeddings, report held-out accuracy overall and per class.

The classifier is an MLP of one hidden layer or, with ``classifier="linear"``, a logistic
regression (the usual linear probe). Codes of unsupervised encoders hold a class without it
being a linear function of them: on digit patches the MLP probe ranks them where the linear one
does not (docs/benchmarks.md, "encoders").

>>> from nic_ray.datasets.synthetic_task import digit_patches
>>> patches, labels = digit_patches(60, seed=0)
>>> result = probe_encoder("mean-rgb", PatchSet(patches, labels, [str(c) for c in range(10)]))
>>> sorted(result), len(result["per_class"]), result["train"] + result["test"]
(['accuracy', 'classifier', 'encoder', 'per_class', 'test', 'train'], 10, 60)
>>> result["test"] == 18 and 0 < result["accuracy"] < 1
True
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nic_ray.encoder_training.options import ProbeOptions
from nic_ray.encoder_training.patches import PatchSet
from nic_ray.encoders import load_encoder
from nic_ray.options import split_options


@torch.inference_mode()
def embed(encoder: torch.nn.Module, patches: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(n, C) float32 codes of uint8 patches (n, P, P, 3)."""
    return np.concatenate(
        [
            encoder(torch.from_numpy(patches[i : i + batch_size])).float().numpy()
            for i in range(0, len(patches), batch_size)
        ]
    )


def held_out(patches: PatchSet, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: stratified by class; where the set says which slide each patch
    came from, whole slides on each side (StratifiedGroupKFold, its test fold about
    ``test_fraction``), so that no slide feeds both.

    >>> groups = np.repeat(np.arange(10), 4)
    >>> train, test = held_out(PatchSet(np.zeros((40, 1, 1, 3)), np.arange(40) % 2, ["a", "b"], groups), 0.3, 0)
    >>> set(groups[train]) & set(groups[test]), len(test) % 4  # whole slides of 4 patches
    (set(), 0)
    """
    index = np.arange(len(patches.labels))
    if patches.groups is None:
        return tuple(train_test_split(index, test_size=test_fraction, random_state=seed, stratify=patches.labels))
    folds = max(2, round(1 / test_fraction))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return next(splitter.split(index, patches.labels, patches.groups))


def probe_encoder(encoder: str | torch.nn.Module, patches: PatchSet, **options) -> dict:
    """Held-out accuracy of a classifier (an MLP of 64 hidden units, or a logistic regression)
    on ``encoder``'s frozen, standardised codes of ``patches`` (a stratified share held out):
    overall and per class (the recall of each). ``options`` are `ProbeOptions`."""
    (opts,) = split_options(options, ProbeOptions)
    test_fraction, seed, classifier = opts.test_fraction, opts.seed, opts.classifier
    if classifier not in ("mlp", "linear"):
        raise ValueError(f"classifier {classifier!r}: expected mlp or linear")
    name = encoder if isinstance(encoder, str) else encoder.config.get("architecture", type(encoder).__name__)
    model = load_encoder(encoder) if isinstance(encoder, str) else encoder.eval()
    codes = embed(model, patches.patches)
    train, test = held_out(patches, test_fraction, seed)
    head = (
        MLPClassifier((64,), alpha=1e-2, max_iter=1000, random_state=seed)
        if classifier == "mlp"
        else LogisticRegression(max_iter=2000)
    )
    fitted = make_pipeline(StandardScaler(), head).fit(codes[train], patches.labels[train])
    predicted = fitted.predict(codes[test])
    truth = patches.labels[test]
    per_class = {
        c: float((predicted[truth == i] == i).mean()) for i, c in enumerate(patches.classes) if (truth == i).any()
    }
    return {
        "encoder": str(name),
        "classifier": classifier,
        "accuracy": float((predicted == truth).mean()),
        "per_class": per_class,
        "train": len(train),
        "test": len(test),
    }


def format_probes(results: list[dict]) -> str:
    """A table: one row an encoder, its held-out accuracy overall and per class."""
    classes = list(results[0]["per_class"])
    rows = [["encoder", "accuracy", *classes]]
    rows += [
        [r["encoder"], f"{r['accuracy']:.3f}", *(f"{r['per_class'].get(c, float('nan')):.2f}" for c in classes)]
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows
    )
