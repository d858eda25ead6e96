"""The image generator shared by the VAE (its decoder) and the BiGAN: the NIC encoder mirrored.

A code (N, C) becomes a 64 × 64 image in [-1, 1], the average-pooled resolution the NIC encoder
sees; objectives compare it with the pooled patch.
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """code (N, C) → image (N, 3, 64, 64) in [-1, 1]: dense to 4×4, four ×2 up-convolutions whose
    filters halve as the image doubles (DCGAN's shape: the decoder costs about the encoder)."""

    def __init__(self, code_size: int, width: int = 128):
        super().__init__()
        self.width = width
        self.dense = nn.Sequential(nn.Linear(code_size, width * 16), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        channels = width
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(channels, max(channels // 2, 8), 4, stride=2, padding=1),
                nn.BatchNorm2d(max(channels // 2, 8)),
                nn.LeakyReLU(0.2),
            ]
            channels = max(channels // 2, 8)
        layers += [nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1), nn.Tanh()]
        self.up = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.up(self.dense(code).view(-1, self.width, 4, 4))


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, P, P) at the 64 × 64 the generator draws."""
    return nn.functional.adaptive_avg_pool2d(x, 64)
