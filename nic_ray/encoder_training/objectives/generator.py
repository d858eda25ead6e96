"""The image generator shared by the VAE (its decoder) and the BiGAN: the NIC encoder mirrored.

A code (N, C) becomes an image in [-1, 1] at the resolution the NIC encoder's convolutions see
(`image_side`: 64 × 64 for 128-px patches); objectives compare it with the patch pooled to it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nic_ray.encoders.nic import input_side


def image_side(patch_size: int) -> int:
    """The side of the images the generator draws and the discriminator judges: what the encoder
    sees (64 for 128-px patches), at least 16 (a 9-px digit is drawn at 16 and compared there).

    >>> image_side(128), image_side(9)
    (64, 16)
    """
    return max(16, input_side(patch_size))


class Generator(nn.Module):
    """code (N, C) → image (N, 3, side, side) in [-1, 1]: dense to 4×4, ×2 up-convolutions whose
    filters halve as the image doubles (DCGAN's shape: the decoder costs about the encoder), then
    pooled to ``side`` where that is not a power of two."""

    def __init__(self, code_size: int, width: int = 128, side: int = 64):
        super().__init__()
        self.width, self.side = width, side
        self.dense = nn.Sequential(nn.Linear(code_size, width * 16), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        channels = width
        for _ in range(math.ceil(math.log2(side / 4)) - 1):
            layers += [
                nn.ConvTranspose2d(channels, max(channels // 2, 8), 4, stride=2, padding=1),
                nn.BatchNorm2d(max(channels // 2, 8)),
                nn.LeakyReLU(0.2),
            ]
            channels = max(channels // 2, 8)
        layers += [nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1), nn.Tanh()]
        self.up = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        image = self.up(self.dense(code).view(-1, self.width, 4, 4))
        return image if image.shape[-1] == self.side else nn.functional.adaptive_avg_pool2d(image, self.side)


def pooled(x: torch.Tensor, side: int = 64) -> torch.Tensor:
    """Images (N, 3, P, P) at the side the generator draws."""
    return nn.functional.adaptive_avg_pool2d(x, side)
