"""Shrinking RGB regions: exact box means for integer factors, area interpolation otherwise."""

from __future__ import annotations

import numpy as np


def box_downsample(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k×k block, rounded half up; (h, w, 3) → (h // k, w // k, 3).

    Sums k strided slices of rows, then k of columns: numpy reduces the small axes of a
    (h, k, w, k, 3) view several times slower (benchmarks/read_tiles.py, the 40× scan).
    """
    if k == 1:
        return image
    h, w = image.shape[0] // k, image.shape[1] // k
    image = image[: h * k, : w * k]
    rows = image[0::k].astype(np.uint16 if k <= 16 else np.uint32)  # 16² · 255 fits in 16 bits
    for i in range(1, k):
        rows += image[i::k]
    total = rows[:, 0::k].copy()
    for j in range(1, k):
        total += rows[:, j::k]
    total += k * k // 2
    total //= k * k
    return total.astype(np.uint8)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-weighted resize to (height, width, 3) for non-integer shrink factors."""
    import torch  # only slides without an integer level ratio need it

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(t, size=(height, width), mode="area")
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
