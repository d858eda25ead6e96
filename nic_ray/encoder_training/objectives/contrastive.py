"""Contrastive Siamese training: which of the batch's patches is this one seen again?

Each location gives two views (`nic_ray.encoder_training.patches.views`): windows shifted off the
cell by up to a third of a patch, each its own way, then augmented on their own. Both pass through
the one encoder; a small projection head maps codes to a sphere, and each view must pick its
partner among all the batch's views (InfoNCE, as SimCLR). Every other patch of the batch is a
negative.

Why not the classic pair classifier (is a pair one location or two)? With both views of one exact
window, it told pairs apart by their pixel alignment alone (0.98 pair accuracy at P = 9) while its
codes held no more of the digit class than an untrained encoder's (docs/benchmarks.md, "encoders").
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import Objective, register_objective
from nic_ray.encoders.nic import to_input

TEMPERATURE = 0.2


@register_objective("contrastive")
class Contrastive(Objective):
    def __init__(self, encoder: nn.Module):
        super().__init__(encoder)
        c = encoder.code_size
        self.projection = nn.Sequential(nn.Linear(c, 4 * c), nn.ReLU(), nn.Linear(4 * c, 2 * c))

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        # Both views in one pass: one set of BatchNorm statistics, so that they cannot tell the views apart.
        x = augment(to_input(torch.cat([batch["a"], batch["b"]])), strength)
        z = nn.functional.normalize(self.projection(self.encoder.encode(x)), dim=1)
        n = len(batch["a"])
        logits = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))  # not itself
        partner = torch.arange(2 * n, device=z.device).roll(n)
        loss = nn.functional.cross_entropy(logits, partner)
        return {"loss": loss, "accuracy": (logits.argmax(dim=1) == partner).float().mean()}
