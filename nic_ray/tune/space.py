"""A sweep's search space: the built-in default or a YAML file, checked before any trial starts.

Each key is a `TrainOptions` field (or ``depth``, the number of CNN layers: stride-2 layers then
two of stride 1, as `default_strides` lays them out); each value a constant or one distribution::

    lr: {loguniform: [1.0e-4, 1.0e-1]}
    weight_decay: {loguniform: [1.0e-6, 1.0e-3]}
    width: {choice: [16, 32, 64]}
    depth: {randint: [3, 4]}          # both ends included
    dropout: {uniform: [0.0, 0.4]}
    crop_size: {choice: [20, 24]}
    grid_dihedral: {choice: [true, false]}
    val_crops: 2                      # a constant

Example::

    space = load_space("space.yaml", TrainOptions(crop_size=24), workers=1)
    space.tune_space()["lr"]  # a ray.tune distribution
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from nic_ray.errors import NicError
from nic_ray.train.nic_cnn import default_strides, smallest_crop
from nic_ray.train.options import TrainOptions

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
# The sweep's budget, its data and its seed: options of the command, never of a trial.
FIXED = ("epochs", "folds", "seed", "balance")


class SpaceError(NicError):
    """A search space that cannot be searched."""


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # "constant" or one of DISTRIBUTIONS
    values: tuple  # the constant, the two ends, or the choices

    def tune(self):
        """Ray Tune's form of the dimension (a constant as it is)."""
        from ray import tune

        match self.kind, self.values:
            case "uniform", (low, high):
                return tune.uniform(low, high)
            case "loguniform", (low, high):
                return tune.loguniform(low, high)
            case "randint", (low, high):
                return tune.randint(low, high + 1)  # both ends included
            case "choice", values:  # Optuna's choices are plain values: strides are searched as text
                return tune.choice([_plain(v) for v in values])
            case _, (value,):
                return _plain(value)


@dataclass(frozen=True)
class Space:
    """The dimensions of a sweep, by option name; ``source`` names it in errors."""

    dimensions: dict[str, Dimension]
    source: str

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune's param_space."""
        return {name: d.tune() for name, d in self.dimensions.items()}

    def describe(self) -> dict[str, list]:
        """A JSON form of the space, kept with the sweep (another space on it is refused)."""
        return {name: [d.kind, *d.values] for name, d in self.dimensions.items()}


def trial_options(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled configuration → `TrainOptions` keyword arguments (``depth`` → strides).

    >>> trial_options({"depth": 4, "lr": 0.01}), trial_options({"strides": "2 1 1"})
    ({'lr': 0.01, 'strides': (2, 2, 1, 1)}, {'strides': (2, 1, 1)})
    """
    options = {k: v for k, v in config.items() if k not in ("depth", "store")}
    if "strides" in options:
        options["strides"] = tuple(map(int, options["strides"].split()))
    if "depth" in config:
        options["strides"] = _layers(config["depth"])
    return options


def _plain(value: Any) -> Any:
    return " ".join(map(str, value)) if isinstance(value, tuple) else value


def _layers(depth: int) -> tuple[int, ...]:
    return (2,) * (depth - 2) + (1, 1) if depth >= 2 else (1,) * depth


def default_space(base: TrainOptions) -> Space:
    """Learning rate and weight decay on log scales, width, depth, dropout, crop size, batch size
    and dihedral augmentation, around ``base`` (the command's options)."""
    crops = sorted({max(smallest_crop((1, 1)), round(base.crop_size * 3 / 4)), base.crop_size})
    deepest = len(default_strides(crops[0]))
    text = {
        "lr": {"loguniform": [1e-4, 3e-2]},
        "weight_decay": {"loguniform": [1e-6, 1e-3]},
        "width": {"choice": [32, 64, 128]},
        "depth": {"randint": [max(2, deepest - 2), deepest]},
        "dropout": {"uniform": [0.0, 0.4]},
        "crop_size": {"choice": crops},
        "batch_size": {"choice": sorted({max(8, base.batch_size // 2), base.batch_size})},
        "grid_dihedral": {"choice": [True, False]},
    }
    return parse_space(text, base, "the default space")


def load_space(path: str | Path | None, base: TrainOptions, workers: int = 1) -> Space:
    """The space of a YAML file (or the default without one), checked against ``base`` and the
    trial's ``workers``; each problem is one line naming the file."""
    if path is None:
        space = default_space(base)
    else:
        try:
            text = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise SpaceError(f"{path}: cannot read the search space: {str(e).splitlines()[0]}") from None
        if not isinstance(text, dict) or not text:
            raise SpaceError(
                f"{path}: expected a mapping of option: distribution, e.g. 'lr: {{loguniform: [1e-4, 1e-1]}}'"
            )
        space = parse_space(text, base, str(path))
    _check_fits(space, base, workers)
    return space


def parse_space(text: dict, base: TrainOptions, source: str) -> Space:
    kinds = {f.name: f.type for f in fields(TrainOptions)}
    kinds["depth"] = "int"
    if "depth" in text and "strides" in text:
        raise SpaceError(f"{source}: give depth or strides, not both")
    dimensions = {}
    for name, value in text.items():
        if name in FIXED:
            raise SpaceError(f"{source}: {name} is not searched; give it as --{name.replace('_', '-')}")
        if name not in kinds:
            raise SpaceError(
                f"{source}: unknown option {name!r} (options: {', '.join(sorted(set(kinds) - set(FIXED)))})"
            )
        dimensions[name] = _dimension(name, value, kinds[name], source)
    return Space(dimensions, source)


def _dimension(name: str, value: Any, kind: str, source: str) -> Dimension:
    where = f"{source}: {name}"
    if not isinstance(value, dict):
        dimension = Dimension(name, "constant", (tuple(value) if isinstance(value, list) else value,))
    elif len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: expected a constant or one of {', '.join(DISTRIBUTIONS)}, not {value}")
    else:
        ((distribution, values),) = value.items()
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: {distribution} takes a list, not {values!r}")
        dimension = Dimension(name, distribution, tuple(tuple(v) if isinstance(v, list) else v for v in values))
    _check_range(dimension, where)
    if kind == "int" and dimension.kind in ("uniform", "loguniform"):
        raise SpaceError(f"{where}: takes integers; use randint or choice, not {dimension.kind}")
    for v in dimension.values:
        _check_type(v, kind, where)
    return dimension


def _check_range(d: Dimension, where: str) -> None:
    if d.kind in ("uniform", "loguniform", "randint"):
        if len(d.values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in d.values):
            raise SpaceError(f"{where}: {d.kind} takes [low, high], not {list(d.values)}")
        low, high = d.values
        if not low < high if d.kind != "randint" else not low <= high:
            raise SpaceError(f"{where}: {d.kind} [{low}, {high}] is empty: low must be below high")
        if d.kind == "loguniform" and low <= 0:
            raise SpaceError(f"{where}: loguniform needs low > 0, not {low}")
        if d.kind == "randint" and not all(isinstance(v, int) for v in d.values):
            raise SpaceError(f"{where}: randint takes integers, not {list(d.values)}")


def _check_type(value: Any, kind: str, where: str) -> None:
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple[int, ...]": lambda v: isinstance(v, tuple) and v and all(s in (1, 2) for s in v),
    }[kind]
    if not ok(value):
        wanted = {"int": "positive integers", "float": "non-negative numbers", "bool": "true or false"}
        raise SpaceError(f"{where}: {value!r} is not valid here (takes {wanted.get(kind, kind)})")


def _check_fits(space: Space, base: TrainOptions, workers: int) -> None:
    """Every trial the space can draw must train: strides fit the smallest crop, batches feed
    each worker two crops."""
    # Ranges and choices alike: the extreme values are among a dimension's listed values.
    values = {name: d.values for name, d in space.dimensions.items()}
    smallest = min(values.get("crop_size", (base.crop_size,)))
    if "depth" in values:
        deepest = max(values["depth"])
        layouts = [("depth", deepest, _layers(deepest))]
    else:
        strides = values.get("strides", (base.strides or default_strides(smallest),))
        layouts = [("strides", " ".join(map(str, s)), tuple(s)) for s in strides]
    for what, shown, strides in layouts:
        if smallest_crop(strides) > smallest:
            raise SpaceError(
                f"{space.source}: {what} {shown} needs crops of at least {smallest_crop(strides)} cells, more than "
                f"crop_size {smallest}; give fewer layers or larger crops"
            )
    low = min(values.get("batch_size", (base.batch_size,)))
    if low // workers < 2:
        raise SpaceError(
            f"{space.source}: batch_size {low} gives fewer than 2 crops to each of {workers} workers; BatchNorm needs 2"
        )
