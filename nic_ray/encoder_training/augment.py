"""Patch augmentation for encoder training (NIC, TPAMI 2019, §3): on batches, on the device.

Images are float (N, 3, P, P) in [-1, 1]. Each patch gets its own random dihedral element,
scale and elastic deformation (one resampling), hue / saturation / brightness / contrast, and
Gaussian noise. ``strength`` scales every range: 0 is the identity, 1 the paper's magnitudes.

>>> x = torch.rand(4, 3, 32, 32) * 2 - 1
>>> augment(x, strength=0.0).equal(x), augment(x).shape, augment(x).equal(x)
(True, torch.Size([4, 3, 32, 32]), False)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nic_ray.dihedral import ORIENTATIONS, dihedral

SCALE = 0.2  # log-scale range: zoom in or out by up to ~22%
ELASTIC = 0.06  # displacement of a 4×4 control grid, in units of half the patch
HUE, SATURATION, BRIGHTNESS, CONTRAST = 0.1, 0.3, 0.2, 0.3
NOISE = 0.05


def _uniform(n: int, spread: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(n, device=like.device) * 2 - 1) * spread


def augment(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``x`` (N, 3, P, P) in [-1, 1], each patch randomly transformed; see the module."""
    if strength == 0:
        return x
    n = x.shape[0]
    orientations = torch.randint(ORIENTATIONS, (n,)).tolist()
    x = torch.stack([dihedral(patch, o, dims=(1, 2)) for patch, o in zip(x, orientations)])
    x = _warp(x, strength)
    x = _colour((x + 1) / 2, strength)
    x = x + torch.randn_like(x) * NOISE * strength
    return x.clamp(0, 1) * 2 - 1


def _warp(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Scale and elastic deformation in one bilinear resampling (reflecting at the borders)."""
    n, _, h, w = x.shape
    scale = torch.exp(_uniform(n, SCALE * strength, x))
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    control = torch.randn(n, 2, 4, 4, device=x.device) * ELASTIC * strength
    grid = grid + F.interpolate(control, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _colour(y: torch.Tensor, strength: float) -> torch.Tensor:
    """Hue (a rotation about the grey axis), saturation, brightness and contrast on y in [0, 1]."""
    n = y.shape[0]
    angle = _uniform(n, HUE * strength * 2 * math.pi, y)
    k = torch.full((3,), 1 / math.sqrt(3), device=y.device)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=y.dtype, device=y.device) / math.sqrt(3)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    rotation = cos * torch.eye(3, device=y.device) + sin * cross + (1 - cos) * torch.outer(k, k)
    y = torch.einsum("nij,njhw->nihw", rotation, y)
    grey = y.mean(dim=1, keepdim=True)
    y = grey + (y - grey) * (1 + _uniform(n, SATURATION * strength, y))[:, None, None, None]
    y = y * (1 + _uniform(n, BRIGHTNESS * strength, y))[:, None, None, None]
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (y - mean) * (1 + _uniform(n, CONTRAST * strength, y))[:, None, None, None]
