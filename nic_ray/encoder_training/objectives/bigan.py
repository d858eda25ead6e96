"""BiGAN (Donahue et al. 2017), as NIC trains it: generator G, encoder E, joint discriminator D.

D tells (x, E(x)) from (G(z), z); G and E learn to fool it (the minimax objective, in its
non-saturating form). Stabilisers for small data: spectral norm and dropout in D, one-sided
label smoothing (real = 0.9), instance noise on D's images, Adam with β₁ = 0.5.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import Objective, register_objective
from nic_ray.encoder_training.objectives.generator import Generator, image_side, pooled
from nic_ray.encoders.nic import to_input

REAL = 0.9
INSTANCE_NOISE = 0.05


class JointDiscriminator(nn.Module):
    """(image (N, 3, side, side), code (N, C)) → logit (N,): real pair or generated one."""

    def __init__(self, code_size: int, width: int = 128, dropout: float = 0.2, side: int = 64):
        super().__init__()
        halvings = round(math.log2(side / 8))  # down to 8 × 8 (64: three times)
        self.side = 8 * 2**halvings  # a side not a power of two is pooled to one first
        layers: list[nn.Module] = []
        channels = 3
        for _ in range(halvings):
            layers += [
                spectral_norm(nn.Conv2d(channels, width, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
                nn.Dropout(dropout),
            ]
            channels = width
        self.image = nn.Sequential(*layers, nn.Flatten(), spectral_norm(nn.Linear(width * 64, 256)), nn.LeakyReLU(0.2))
        self.code = nn.Sequential(spectral_norm(nn.Linear(code_size, 256)), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(nn.Dropout(dropout), spectral_norm(nn.Linear(512, 1)))

    def forward(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] != self.side:
            image = nn.functional.adaptive_avg_pool2d(image, self.side)
        return self.joint(torch.cat([self.image(image), self.code(code)], dim=1)).squeeze(1)


@register_objective("bigan")
class BiGAN(Objective):
    groups = ("discriminator", "generator")
    betas = (0.5, 0.999)

    def __init__(self, encoder: nn.Module):
        super().__init__(encoder)
        width = encoder.config["width"]
        self.side = image_side(encoder.patch_size)
        self.generator = Generator(encoder.code_size, width, self.side)
        self.discriminator = JointDiscriminator(encoder.code_size, width, side=self.side)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.discriminator.parameters()),
            "generator": list(self.generator.parameters()) + list(self.encoder.parameters()),
        }

    def losses(self, group: str, batch: dict, strength: float) -> dict[str, torch.Tensor]:
        x = augment(to_input(batch["patch"]), strength)
        real_image = pooled(x, self.side)
        noise = lambda image: image + torch.randn_like(image) * INSTANCE_NOISE
        bce = nn.functional.binary_cross_entropy_with_logits
        z = torch.randn(len(x), self.encoder.code_size, device=x.device)
        if group == "discriminator":
            with torch.no_grad():  # D's step: E and G are inputs, not trained
                code, fake = self.encoder.encode(x), self.generator(z)
            real = self.discriminator(noise(real_image), code)
            generated = self.discriminator(noise(fake), z)
            loss = bce(real, torch.full_like(real, REAL)) + bce(generated, torch.zeros_like(generated))
            accuracy = ((real > 0).float().mean() + (generated < 0).float().mean()) / 2
            return {"loss": loss, "d_accuracy": accuracy}
        real = self.discriminator(noise(real_image), self.encoder.encode(x))
        generated = self.discriminator(noise(self.generator(z)), z)
        loss = bce(real, torch.zeros_like(real)) + bce(generated, torch.ones_like(generated))
        return {"loss": loss}
