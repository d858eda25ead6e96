"""Ways of training the NIC encoder (TPAMI 2019, §2; MIDL 2020), one per file, by name.

An objective is a module that holds the encoder being trained and whatever else its loss needs
(a decoder, a discriminator, heads). Its parameters form one or more optimiser groups, stepped
in order on each batch: `losses(group, batch)` returns the group's ``"loss"`` to minimise and
figures to report.

>>> from nic_ray.encoders import create_encoder
>>> objective = build_objective("vae", create_encoder("nic", code_size=16, width=8))
>>> optimizers = objective.optimizers(lr=1e-3)
>>> sorted(objective.step({"patch": torch.zeros(2, 128, 128, 3, dtype=torch.uint8)}, optimizers, strength=1.0))
['kl', 'loss', 'reconstruction']
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
            raise NicError(
                f"encoder {encoder.config.get('architecture')!r}: training needs the NIC architecture (encode, trunk)"
            )
        self.encoder = encoder

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """An Adam per group."""
        groups = self.parameter_groups()
        return {g: torch.optim.Adam(groups[g], lr=lr, betas=self.betas) for g in self.groups}

    def step(
        self,
        batch: dict,
        optimizers: dict[str, torch.optim.Optimizer],
        strength: float,
        sync: Callable[[list[nn.Parameter]], None] | None = None,
    ) -> dict[str, float]:
        """One training step: each group's loss, backward, ``sync`` of its gradients (averaging
        over workers), optimiser step. Returns the figures, prefixed by group when several."""
        groups = self.parameter_groups() if sync else {}
        figures = {}
        for g in self.groups:
            out = self.losses(g, batch, strength)
            optimizers[g].zero_grad(set_to_none=True)
            out["loss"].backward()
            if sync:
                sync(groups[g])
            optimizers[g].step()
            figures |= {(k if len(self.groups) == 1 else f"{g}_{k}"): float(v.detach()) for k, v in out.items()}
        return figures

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


from nic_ray.encoder_training.objectives import bigan, contrastive, multitask, vae  # noqa: E402,F401  (register them)
