"""Shrinking RGB regions: exact box means for integer factors, area interpolation otherwise."""

from __future__ import annotations

import numpy as np


def box_downsample(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k×k block, rounded half up; (h, w, 3) → (h // k, w // k, 3)."""
    if k == 1:
        return image
    h, w = image.shape[0] // k, image.shape[1] // k
    blocks = image[: h * k, : w * k].reshape(h, k, w, k, -1)
    total = blocks.sum(axis=(1, 3), dtype=np.uint32)
    return ((total + k * k // 2) // (k * k)).astype(np.uint8)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-weighted resize to (height, width, 3) for non-integer shrink factors."""
    import torch  # only slides without an integer level ratio need it

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(t, size=(height, width), mode="area")
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
