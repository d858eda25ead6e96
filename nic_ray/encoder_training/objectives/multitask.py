"""Supervised multitask training (Tellez et al., MIDL 2020): one classification head per
patch-level task on the shared encoder, cross-entropy summed over tasks.

Each batch holds as many patches of every task (`nic_ray.encoder_training.trainer` cycles the smaller
ones), so tasks of different sizes weigh the same.
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import Objective, register_objective
from nic_ray.encoders.nic import to_input


@register_objective("multitask")
class Multitask(Objective):
    def __init__(self, encoder: nn.Module, tasks: dict[str, int]):
        super().__init__(encoder)
        self.heads = nn.ModuleDict({name: nn.Linear(encoder.code_size, classes) for name, classes in tasks.items()})

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            logits = head(self.encoder.encode(augment(to_input(batch[name]["patch"]), strength)))
            label = batch[name]["label"].long()
            out[f"loss_{name}"] = nn.functional.cross_entropy(logits, label)
            out[f"accuracy_{name}"] = (logits.argmax(1) == label).float().mean()
        out["loss"] = sum(v for k, v in out.items() if k.startswith("loss_"))
        return out
