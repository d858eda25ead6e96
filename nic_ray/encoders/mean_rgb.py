"""The mean-RGB baseline: each patch becomes its per-channel mean colour in [0, 1]."""

from __future__ import annotations

import numpy as np
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
        n, h, w, c = patches.shape
        if patches.device.type != "cpu":
            return patches.float().mean(dim=(1, 2)) / 255
        # On CPU, summing whole uint8 rows in uint16 (while h·255 fits) beats converting every
        # pixel to float several times over: mean-RGB should cost nothing next to decoding
        # (benchmarks/compress.py, the encoder alone).
        rows = patches.numpy().reshape(n, h, w * c).sum(axis=1, dtype=np.uint16 if h * 255 < 2**16 else np.uint32)
        sums = rows.reshape(n, w, c).sum(axis=1, dtype=np.uint64)
        return torch.from_numpy(sums / (h * w * 255)).float()
