"""The NIC slide-level CNN (Tellez et al., TPAMI 2019), on compressed grids.

8 × [SeparableConv 3×3 (depthwise, then pointwise), valid, strides 2,2,2,2,2,2,1,1 → BatchNorm →
LeakyReLU(0.3) → SpatialDropout] → global average → dense → BatchNorm → LeakyReLU → one head per
task. A 400×400 crop shrinks to 1×1 exactly; larger crops are averaged. Valid convolutions need
crops of at least 383 cells with these strides: use fewer or smaller strides for smaller crops.
"""

from __future__ import annotations

import torch
from torch import nn

from nic_ray.train.options import NIC_STRIDES


def smallest_crop(strides: tuple[int, ...]) -> int:
    """The fewest cells a side that valid 3 × 3 convolutions with ``strides`` reduce to one.

    >>> smallest_crop(NIC_STRIDES), smallest_crop((2, 2, 1, 1))
    (383, 23)
    """
    size = 1
    for stride in reversed(strides):
        size = (size - 1) * stride + 3
    return size


def default_strides(crop_size: int) -> tuple[int, ...]:
    """The paper's strides (six of 2, then two of 1) for 400-cell crops; for smaller crops, as
    many leading 2s as the crop allows (and its two 1s).

    >>> default_strides(400) == NIC_STRIDES, default_strides(24), default_strides(100)
    (True, (2, 2, 1, 1), (2, 2, 2, 2, 1, 1))
    """
    for halvings in range(NIC_STRIDES.count(2), -1, -1):
        strides = (2,) * halvings + (1, 1)
        if smallest_crop(strides) <= crop_size:
            return strides
    return (1,)


class SeparableConv2d(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class NICNet(nn.Module):
    """``heads`` maps a task name to its output size (classes, or 1 for regression/survival).

    >>> net = NICNet(in_channels=128, heads={"grade": 3, "os": 1}).eval()
    >>> x = torch.randn(2, 128, 400, 400)
    >>> out = net(x)
    >>> out["grade"].shape, out["os"].shape
    (torch.Size([2, 3]), torch.Size([2, 1]))
    >>> torch.allclose(net(x[1:])["grade"], out["grade"][1:], atol=1e-5)  # each crop on its own
    True
    """

    def __init__(
        self,
        in_channels: int,
        heads: dict[str, int],
        width: int = 128,
        strides: tuple[int, ...] = NIC_STRIDES,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "heads": dict(heads),
            "width": width,
            "strides": list(strides),
            "dropout": dropout,
        }
        layers: list[nn.Module] = []
        channels = in_channels
        for stride in strides:
            layers += [
                SeparableConv2d(channels, width, stride),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.3),
                nn.Dropout2d(dropout),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.LeakyReLU(0.3))
        self.heads = nn.ModuleDict({name: nn.Linear(width, size) for name, size in heads.items()})

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) grid crops → (N, width) slide features."""
        return self.dense(self.features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.embed(x)
        return {name: head(z) for name, head in self.heads.items()}
