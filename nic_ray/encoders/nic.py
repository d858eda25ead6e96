"""The NIC encoder (Tellez et al., TPAMI 2019), as released.

A 128-px patch is average-pooled to 64 px and scaled to [-1, 1]; four 3×3 stride-2 valid convs
of 128 filters, each followed by LeakyReLU(0.2) and BatchNorm; flattened (1152) and projected
densely to the code. ~596k parameters, ~45 M multiply-adds a patch.
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoders.registry import register_encoder


@register_encoder("nic")
class NICEncoder(nn.Module):
    def __init__(self, code_size: int = 128, patch_size: int = 128, mpp: float = 0.5, width: int = 128):
        super().__init__()
        self.code_size, self.patch_size, self.mpp = code_size, patch_size, mpp
        self.config = {"code_size": code_size, "patch_size": patch_size, "mpp": mpp, "width": width}
        layers: list[nn.Module] = [nn.AvgPool2d(2)]
        side, channels = patch_size // 2, 3
        for _ in range(4):
            layers += [nn.Conv2d(channels, width, 3, stride=2), nn.LeakyReLU(0.2), nn.BatchNorm2d(width)]
            side, channels = (side - 3) // 2 + 1, width
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(width * side * side, code_size)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.encode(to_input(patches))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (N, C) of images (N, 3, P, P) in [-1, 1], as training objectives feed them."""
        return self.project(self.trunk(x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened features (N, width·3·3) the code is projected from."""
        return self.features(x).flatten(1)


def to_input(patches: torch.Tensor) -> torch.Tensor:
    """uint8 (N, P, P, 3) → float (N, 3, P, P) in [-1, 1]; on the patches' device (uint8 travels)."""
    return patches.permute(0, 3, 1, 2).float() / 127.5 - 1
