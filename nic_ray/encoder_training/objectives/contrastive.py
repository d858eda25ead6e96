"""Contrastive Siamese training: is a pair of patches one location seen twice, or two?

Pairs come from `nic_ray.encoder_training.patches.make_pairs`: *same* = two independently augmented
views of one location; *different* = an adjacent location (75%) or one of another slide (25%).
Both patches pass through the one encoder; a small classifier reads |a − b| and a · b.
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import Objective, register_objective
from nic_ray.encoders.nic import to_input


@register_objective("contrastive")
class Contrastive(Objective):
    def __init__(self, encoder: nn.Module):
        super().__init__(encoder)
        c = encoder.code_size
        self.classifier = nn.Sequential(nn.Linear(2 * c, c), nn.LeakyReLU(0.2), nn.Linear(c, 1))

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        # Both views in one pass: one set of BatchNorm statistics, so that they cannot tell the views apart.
        a, b = self.encoder.encode(augment(to_input(torch.cat([batch["a"], batch["b"]])), strength)).chunk(2)
        logit = self.classifier(torch.cat([(a - b).abs(), a * b], dim=1)).squeeze(1)
        same = batch["same"].float()
        loss = nn.functional.binary_cross_entropy_with_logits(logit, same)
        return {"loss": loss, "accuracy": ((logit > 0).float() == same).float().mean()}
