"""Ways of training the NIC encoder (TPAMI 2019, §2; MIDL 2020), one per file, by name.

An objective is a module that holds the encoder being trained and whatever else its loss needs
(a decoder, a discriminator, heads). Its parameters form one or more optimiser groups, stepped
in order on each batch: `losses(group, batch)` returns the group's ``"loss"`` to minimise and
figures to report.

>>> from nic_ray.encoders import create_encoder
>>> objective = build_objective("vae", create_encoder("nic", code_size=16, width=8))
>>> objective.groups, sorted(objective.parameter_groups())
(('model',), ['model'])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nic_ray.errors import NicError

_OBJECTIVES: dict[str, Callable[..., Objective]] = {}


class Objective(nn.Module):
    """Base of the training objectives: ``encoder`` plus the modules of one way to train it."""

    groups: tuple[str, ...] = ("model",)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's, for every group

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not hasattr(encoder, "encode"):
            raise NicError(f"encoder {encoder.config.get('architecture')!r}: training needs the NIC architecture (encode, trunk)")
        self.encoder = encoder

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def register_objective(name: str) -> Callable:
    def add(cls: Callable[..., Objective]) -> Callable[..., Objective]:
        _OBJECTIVES[name] = cls
        return cls

    return add


def list_objectives() -> list[str]:
    return sorted(_OBJECTIVES)


def build_objective(method: str, encoder: nn.Module, **options) -> Objective:
    """The objective ``method`` around ``encoder``; ``options`` are the method's own."""
    if method not in _OBJECTIVES:
        raise NicError(f"unknown encoder training method {method!r}: expected one of {', '.join(list_objectives())}")
    return _OBJECTIVES[method](encoder, **options)


from nic_ray.encoders.objectives import bigan, contrastive, multitask, vae  # noqa: E402,F401  (register them)
