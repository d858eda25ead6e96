"""Options defined once: a dataclass field carries its default and its help, and the command
line (`add_flags`), the Python functions (`split_options`) and the job entry points (through the
command line) all read that one definition.

Example::

    @dataclass
    class Sampling:
        crops: int = option(10, "crops per slide")

    parser = argparse.ArgumentParser()
    add_flags(parser, Sampling)
    parser.parse_args(["--crops", "4"]).crops  # 4
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field, fields
from typing import Any


def option(
    default: Any,
    help: str,
    *,
    type: type | None = None,
    choices: tuple | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its ``help``; ``type`` where the default (None) does not tell it,
    ``flag`` where the command-line name differs from the field's."""
    metadata = {"help": help, "type": type, "choices": choices, "flag": flag, "metavar": metavar}
    if isinstance(default, (list, dict)):
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


def split_options(kwargs: dict, *dataclasses_: type) -> tuple:
    """``kwargs`` shared out among option dataclasses (each built with its share).

    >>> @dataclasses.dataclass
    ... class A:
    ...     x: int = 1
    >>> split_options({"x": 2}, A)
    (A(x=2),)
    """
    names = [{f.name for f in fields(d)} for d in dataclasses_]
    unknown = set(kwargs) - set().union(*names)
    if unknown:
        raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
    return tuple(d(**{k: v for k, v in kwargs.items() if k in n}) for d, n in zip(dataclasses_, names))


def options_of(args: argparse.Namespace, *dataclasses_: type) -> dict[str, Any]:
    """The parsed values of the flags `add_flags` made for ``dataclasses_``."""
    return {f.name: getattr(args, f.name) for d in dataclasses_ for f in fields(d)}


class _Pairs(argparse.Action):
    """``--flag NAME=AMOUNT`` repeated, gathered into a dict."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, _, amount = value.partition("=")
        try:
            pairs = {**getattr(namespace, self.dest), name: float(amount or 1)}
        except ValueError:
            parser.error(f"{option_string}: expected NAME=AMOUNT, not {value!r}")
        setattr(namespace, self.dest, pairs)


def add_flags(parser: argparse.ArgumentParser, *dataclasses_: type) -> None:
    """A flag for each field of ``dataclasses_``, with its help and default."""
    for d in dataclasses_:
        for f in fields(d):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
            kwargs: dict[str, Any] = {"dest": f.name, "default": default, "metavar": meta.get("metavar")}
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            unsaid = default is None or default is False or (isinstance(default, dict | tuple) and not default)
            help = meta["help"] if unsaid else f"{meta['help']} (default: {shown})"
            if isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
                kwargs.pop("metavar")
            elif isinstance(default, dict):
                kwargs.update(action=_Pairs, metavar=meta.get("metavar") or "NAME=AMOUNT")
            elif isinstance(default, tuple):
                kwargs.update(type=int, nargs="+")
            else:
                kwargs.update(type=meta.get("type") or type(default), choices=meta.get("choices"))
            parser.add_argument(flag, help=help, **kwargs)


def as_flags(values: dict[str, Any], dataclass_: type) -> list[str]:
    """The command-line flags that give ``values`` of ``dataclass_``'s fields not at their default.

    >>> @dataclasses.dataclass
    ... class A:
    ...     size: int = option(1, "")
    ...     turn: bool = option(True, "")
    ...     steps: tuple[int, ...] = option((), "")
    ...     needs: dict = option({}, "")
    >>> as_flags({"size": 2, "turn": False, "steps": (2, 1), "needs": {"ssd": 1}}, A)
    ['--size', '2', '--no-turn', '--steps', '2', '1', '--needs', 'ssd=1']
    """
    flags = []
    for f in fields(dataclass_):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = values.get(f.name, default)
        if value == default or (isinstance(default, tuple) and tuple(value) == default):
            continue
        flag = "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))
        if isinstance(default, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(default, dict):
            flags += [a for name, amount in value.items() for a in (flag, f"{name}={amount}")]
        elif isinstance(default, tuple):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags
