"""Label tables and tasks: validated at the boundary, so training never meets a bad label.

A task is ``NAME:TYPE:COLUMNS`` with TYPE binary, multiclass, regression or survival
(COLUMNS ``time,event``), e.g. ``grade:multiclass:grade`` or ``os:survival:time,event``.
A missing value masks that slide out of that task's loss only. An optional ``split`` column
(train/val/test) or ``fold`` column (integers) fixes how slides are split; see `plan_splits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nic_ray.errors import NicError
from nic_ray.tables import read_table

TYPES = ("binary", "multiclass", "regression", "survival")
SPLITS = ("train", "val", "test")


class LabelError(NicError):
    """A label table or task declaration that cannot be trained on."""


@dataclass(frozen=True)
class Task:
    name: str
    type: str
    columns: tuple[str, ...]
    classes: tuple = field(default=())  # binary/multiclass: the sorted label values

    @property
    def outputs(self) -> int:
        """Head size: classes (2 → 1 logit for binary), else 1."""
        return 1 if self.type in ("binary", "regression", "survival") else len(self.classes)


def parse_task(text: str) -> Task:
    """``"os:survival:time,event"`` → Task("os", "survival", ("time", "event"))."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise LabelError(f"task {text!r}: expected NAME:TYPE:COLUMNS, e.g. grade:multiclass:grade")
    name, kind, columns = parts[0], parts[1], tuple(parts[2].split(","))
    if kind not in TYPES:
        raise LabelError(f"task {text!r}: type must be one of {', '.join(TYPES)}")
    if len(columns) != (2 if kind == "survival" else 1):
        raise LabelError(f"task {text!r}: {kind} takes {'time,event' if kind == 'survival' else 'one column'}")
    return Task(name, kind, columns)


@dataclass
class Labels:
    """Per-task label arrays aligned with ``slide_ids``; NaN where a label is missing."""

    slide_ids: list[str]
    tasks: list[Task]
    values: dict[str, list]  # task name → labels (class index, value, or (time, event))
    not_in_store: list[str]  # in the table, not complete in the store: reported, not used
    not_in_table: list[str]  # complete in the store, no row in the table
    split: list[str] | None = None  # the table's split column, if any
    fold: list[int] | None = None  # the table's fold column, if any
    patients: list[str] | None = None  # the table's patient_id column (a slide alone: its own id)

    def targets(self, ids: list[str], scaling: dict[str, tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
        """Task → targets of ``ids``: class index, value (standardised by ``scaling``'s (mean,
        std) where given), or (time, event) rows; NaN where a label is missing."""
        position = {s: i for i, s in enumerate(self.slide_ids)}
        out = {}
        for task in self.tasks:
            values = np.array([self.values[task.name][position[s]] for s in ids], float)
            if task.type == "regression" and scaling:
                mean, std = scaling[task.name]
                values = (values - mean) / std
            out[task.name] = values
        return out

    def patients_of(self, ids: list[str]) -> list[str]:
        """The patient of each of ``ids`` (a slide without one is its own)."""
        if self.patients is None:
            raise LabelError("--per-patient: the label table needs a patient_id column")
        position = {s: i for i, s in enumerate(self.slide_ids)}
        return [self.patients[position[s]] for s in ids]

    def patient_targets(self, ids: list[str], targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``targets`` of ``ids``, refused where one patient's slides disagree (a patient-level
        metric needs one label a patient)."""
        patients = self.patients_of(ids)
        for name, values in targets.items():
            first: dict[str, tuple] = {}
            for slide, patient, value in zip(ids, patients, values):
                seen = first.setdefault(patient, (slide, value))
                if not np.array_equal(seen[1], value, equal_nan=True):
                    raise LabelError(
                        f"patient {patient}: task {name} differs between slides {seen[0]} and {slide}; "
                        "a per-patient evaluation needs one label a patient"
                    )
        return targets

    def scaling(self, ids: list[str]) -> dict[str, tuple[float, float]]:
        """(mean, std) of each regression target over ``ids``: heads learn standardised values."""
        out = {}
        for task in self.tasks:
            if task.type == "regression":
                values = self.targets(ids)[task.name]
                std = float(np.nanstd(values))
                out[task.name] = (float(np.nanmean(values)), std if std > 0 else 1.0)
        return out


def load_labels(path: str, tasks: list[Task], complete_slides: list[str]) -> Labels:
    """Validate ``path`` (CSV or Parquet, keyed by ``slide_id``) for ``tasks`` against a store."""
    rows = read_table(path, "label table", LabelError).to_pylist()
    if not rows or "slide_id" not in rows[0]:
        raise LabelError(f"{path}: the label table needs a slide_id column and rows")
    ids = [str(r["slide_id"]) for r in rows]
    duplicated = sorted({s for s in ids if ids.count(s) > 1})
    if duplicated:
        raise LabelError(f"{path}: slide ids appear twice: {', '.join(duplicated[:5])}")
    complete = set(complete_slides)
    used = [r for r in rows if str(r["slide_id"]) in complete]
    if not used:
        raise LabelError(f"{path}: none of its {len(rows)} slide ids is complete in the store")
    values, checked = {}, []
    for task in tasks:
        missing = [c for c in task.columns if c not in rows[0]]
        if missing:
            raise LabelError(f"{path}: task {task.name}: no column {', '.join(missing)}")
        values[task.name], task = _check(path, task, used)
        checked.append(task)
    return Labels(
        slide_ids=[str(r["slide_id"]) for r in used],
        tasks=checked,
        values=values,
        not_in_store=sorted(set(ids) - complete),
        not_in_table=sorted(complete - set(ids)),
        split=_one_role_a_patient(path, used, "split", _split_column(path, used)),
        fold=_one_role_a_patient(path, used, "fold", _fold_column(path, used)),
        patients=_patient_column(used),
    )


def _patient_column(rows: list[dict]) -> list[str] | None:
    if "patient_id" not in rows[0]:
        return None
    return [str(r["patient_id"]) if r["patient_id"] not in (None, "") else f"slide:{r['slide_id']}" for r in rows]


def _one_role_a_patient(path: str, rows: list[dict], column: str, roles: list | None) -> list | None:
    """``roles`` (a split or fold per slide), refused where one patient's slides differ."""
    patients = _patient_column(rows)
    if roles is None or patients is None:
        return roles
    seen: dict[str, tuple] = {}
    for row, patient, role in zip(rows, patients, roles):
        first = seen.setdefault(patient, (role, row["slide_id"]))
        if first[0] != role:
            raise LabelError(
                f"{path}: patient {row['patient_id']} is in {column} {first[0]} (slide {first[1]}) and "
                f"{role} (slide {row['slide_id']}); a patient's slides must share one {column}"
            )
    return roles


def _split_column(path: str, rows: list[dict]) -> list[str] | None:
    if "split" not in rows[0]:
        return None
    split = [{"validation": "val"}.get(str(r["split"]), str(r["split"])) for r in rows]
    bad = sorted({s for s in split if s not in SPLITS})
    if bad:
        raise LabelError(f"{path}: split values must be train, val or test, not {', '.join(map(repr, bad))}")
    if "train" not in split:
        raise LabelError(f"{path}: the split column puts no slide in train")
    return split


def _fold_column(path: str, rows: list[dict]) -> list[int] | None:
    if "fold" not in rows[0]:
        return None
    try:
        return [int(r["fold"]) for r in rows]
    except (TypeError, ValueError):
        raise LabelError(f"{path}: fold values must be integers") from None


def _number(path: str, task: Task, row: dict, column: str) -> float:
    value = row[column]
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LabelError(
            f"{path}: task {task.name}: {column} of {row['slide_id']} is {value!r}, not a number"
        ) from None


def _check(path: str, task: Task, rows: list[dict]) -> tuple[list, Task]:
    if task.type == "survival":
        pairs = [(_number(path, task, r, task.columns[0]), _number(path, task, r, task.columns[1])) for r in rows]
        for r, (t, e) in zip(rows, pairs):
            if t < 0:
                raise LabelError(f"{path}: task {task.name}: negative time {t:g} for {r['slide_id']}")
            if not math.isnan(e) and e not in (0, 1):
                raise LabelError(f"{path}: task {task.name}: event of {r['slide_id']} is {e:g}, not 0 or 1")
        if not any(e == 1 for _, e in pairs):
            raise LabelError(f"{path}: task {task.name}: no events; a Cox model cannot learn from censoring alone")
        return pairs, task
    if task.type == "regression":
        return [_number(path, task, r, task.columns[0]) for r in rows], task
    raw = [r[task.columns[0]] for r in rows]
    classes = tuple(sorted({v for v in raw if v is not None and v != ""}, key=str))
    if len(classes) < 2:
        raise LabelError(
            f"{path}: task {task.name}: a single class {classes[0] if classes else '(none)'!r}; nothing to learn"
        )
    if task.type == "binary" and len(classes) != 2:
        raise LabelError(f"{path}: task {task.name}: binary needs 2 classes, found {len(classes)}; use multiclass")
    index = {c: i for i, c in enumerate(classes)}
    return [index.get(v, math.nan) for v in raw], Task(task.name, task.type, task.columns, classes)
