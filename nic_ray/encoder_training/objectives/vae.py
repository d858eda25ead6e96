"""Variational autoencoder: the encoder gives (μ, log σ²), a decoder redraws the pooled patch.

Loss per patch: squared reconstruction error summed over the pooled pixels (64 × 64 × 3 for
128-px patches), plus
γ · KL(N(μ, σ²) ‖ N(0, 1)). The code a store keeps is μ, the encoder's own output.
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import Objective, register_objective
from nic_ray.encoder_training.objectives.generator import Generator, image_side, pooled
from nic_ray.encoders.nic import to_input


@register_objective("vae")
class VAE(Objective):
    def __init__(self, encoder: nn.Module, gamma: float = 1.0):
        super().__init__(encoder)
        self.gamma = gamma
        self.log_var = nn.Linear(encoder.project.in_features, encoder.code_size)
        self.side = image_side(encoder.patch_size)
        self.decoder = Generator(encoder.code_size, encoder.config["width"], self.side)

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        x = augment(to_input(batch["patch"]), strength)
        features = self.encoder.trunk(x)
        mu, log_var = self.encoder.project(features), self.log_var(features).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        reconstruction = (self.decoder(z) - pooled(x, self.side)).pow(2).sum(dim=(1, 2, 3)).mean()
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(dim=1).mean()
        return {"loss": reconstruction + self.gamma * kl, "reconstruction": reconstruction, "kl": kl}
