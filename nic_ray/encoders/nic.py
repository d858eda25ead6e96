"""The NIC encoder (Tellez et al., TPAMI 2019), as released.

A 128-px patch is average-pooled to 64 px and scaled to [-1, 1]; four 3×3 stride-2 valid convs
of 128 filters, each followed by LeakyReLU(0.2) and BatchNorm; flattened (1152) and projected
densely to the code.

Other patch sizes keep the shape of it: patches of 64 px or more are pooled by 2; a conv strides
by 2 while its output keeps at least 3 pixels a side, and keeps the size (padding 1) after that.
So the paper's 9-px digits (P = 9) go 9 → 4 → 4 → 4 → 4, and 128 px is the released network.
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
        layers: list[nn.Module] = [nn.AvgPool2d(2)] if patch_size >= 64 else []
        side, channels = input_side(patch_size), 3
        for _ in range(4):
            halve = (side - 3) // 2 + 1 >= 3
            conv = nn.Conv2d(channels, width, 3, stride=2) if halve else nn.Conv2d(channels, width, 3, padding=1)
            layers += [conv, nn.LeakyReLU(0.2), nn.BatchNorm2d(width)]
            side, channels = (side - 3) // 2 + 1 if halve else side, width
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


def input_side(patch_size: int) -> int:
    """The side of the image the convolutions see: patches of 64 px or more pooled by 2."""
    return patch_size // 2 if patch_size >= 64 else patch_size


def to_input(patches: torch.Tensor) -> torch.Tensor:
    """uint8 (N, P, P, 3) → float (N, 3, P, P) in [-1, 1]; on the patches' device (uint8 travels)."""
    return patches.permute(0, 3, 1, 2).float() / 127.5 - 1
