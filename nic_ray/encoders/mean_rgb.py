"""The mean-RGB baseline: each patch becomes its per-channel mean colour in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.encoders.registry import register_encoder


@register_encoder("mean-rgb")
class MeanRGB(nn.Module):
    code_size = 3

    def __init__(self, patch_size: int = 128, mpp: float = 0.5):
        super().__init__()
        self.patch_size, self.mpp = patch_size, mpp
        self.config = {"patch_size": patch_size, "mpp": mpp}

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.float().mean(dim=(1, 2)) / 255
