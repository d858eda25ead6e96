"""Grad-CAM of the slide CNN over whole compressed grids (TPAMI 2019 §3.3, Eq. 7).

The class activation of an output y on the CNN's *first* block (the finest map): the block's
feature maps A_k weighted by α_k = the mean over positions of ∂y/∂A_k, summed, and rectified.
Its positions are those of the block's strided, valid convolution; `to_cells` spreads each
value evenly over the 3 × 3 cells it saw, so that the map lies on the grid's cells.

A whole grid is covered by model-sized crops laid symmetrically along each axis (zero-padded
where the grid is smaller): each crop is seen in its dihedral views (view o of an 8-orientation
store reads orientation o, as prediction does), every view's map turned back, and overlapping
crops averaged. With the 8 views the result is equivariant: the heatmap of a turned grid is the
turned heatmap (exactly where padding is even on both sides). Crops are read one at a time, so
memory stays that of one crop whatever the grid's size.

Example::

    heatmap = grid_heatmap([net], store.embeddings("case-1"), Target("label"), crop_size=400)  # (H, W)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nic_ray.dihedral import dihedral, inverse
from nic_ray.train.nic_cnn import NICNet


@dataclass(frozen=True)
class Target:
    """The output a heatmap explains: a task's head, and for a multiclass head, a class index
    (None: the class the model predicts). Binary heads explain the positive class; regression
    heads the value; survival heads the risk (log-hazard)."""

    task: str
    index: int | None = None


def grad_cam(net: NICNet, x: torch.Tensor, target: Target) -> torch.Tensor:
    """(N, h, w) Grad-CAM of ``target`` on ``net``'s first block for crops ``x`` (N, C, R, R),
    each crop's map from its own output; ``net`` in eval mode."""
    first = net.features[2]  # the first block's activation (its dropout is the identity in eval)
    held: list[torch.Tensor] = []
    handle = first.register_forward_hook(lambda module, inputs, output: held.append(output))
    try:
        with torch.enable_grad():
            out = net(x.requires_grad_(False))[target.task]
            activations = held[0]
            index = target.index if target.index is not None else int(out.mean(0).argmax())
            (grads,) = torch.autograd.grad(out[:, index].sum(), activations)
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1)).detach()


def to_cells(cam: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(N, h, w) maps of a 3 × 3 convolution with ``stride`` → (N, size, size) on its input's
    cells: each value spread evenly over the cells it saw; cells no position saw are 0."""
    ones = torch.ones(1, 1, 3, 3, dtype=cam.dtype)
    spread = F.conv_transpose2d(cam[:, None], ones, stride=stride)[:, 0]
    seen = F.conv_transpose2d(torch.ones_like(cam[:1, None]), ones, stride=stride)[:, 0]
    full = torch.zeros(cam.shape[0], size, size, dtype=cam.dtype)
    h, w = min(size, spread.shape[1]), min(size, spread.shape[2])
    full[:, :h, :w] = spread[:, :h, :w] / seen[:, :h, :w].clamp(min=1)
    return full


def crop_cam(net: NICNet, view: Callable[[int], torch.Tensor], views: int, target: Target) -> torch.Tensor:
    """(R, R) Grad-CAM of one crop, whose view o (C, R, R; turned by D4 element o) ``view(o)``
    gives: the mean of the views' maps, each turned back onto the crop's cells."""
    maps = []
    for o in range(views):  # a view at a time: 8 views of a 400-cell crop hold gigabytes of activations
        crop = view(o)
        cam = to_cells(grad_cam(net, crop[None], target), crop.shape[-1], net.config["strides"][0])[0]
        maps.append(dihedral(cam, inverse(o), dims=(0, 1)))
    return torch.stack(maps).mean(0)


def tile_starts(length: int, size: int) -> list[int]:
    """Where crops of ``size`` start along an axis of ``length`` cells: one centred crop (a
    negative start pads) where it fits, else crops overlapping by at least half, laid
    symmetrically (the starts read the same from either end)."""
    if length <= size:
        return [-((size - length) // 2)]
    count = math.ceil((length - size) / (size / 2)) + 1
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    return [starts[i] if i < count / 2 else length - size - starts[count - 1 - i] for i in range(count)]


def _window(grid, orientation: int, y0: int, x0: int, size: int) -> torch.Tensor:
    """(C, size, size) float32 of orientation ``orientation`` of ``grid`` (O, C, H, W; numpy, or
    zarr read lazily) from (y0, x0), zero off the grid."""
    _, C, H, W = grid.shape
    window = np.zeros((C, size, size), np.float32)
    ya, yb, xa, xb = max(y0, 0), min(y0 + size, H), max(x0, 0), min(x0 + size, W)
    window[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = grid[orientation, :, ya:yb, xa:xb]
    return torch.from_numpy(window)


class _Views:
    """View o of the crop at (y0, x0), turned by D4 element o; each stored orientation read once
    (whatever the views and the nets), orientation o for view o in an 8-orientation store."""

    def __init__(self, grid, orientations: int, y0: int, x0: int, size: int):
        self.grid, self.orientations, self.y0, self.x0, self.size = grid, orientations, y0, x0, size
        self.windows: dict[int, torch.Tensor] = {}

    def __call__(self, o: int) -> torch.Tensor:
        source = o if self.orientations == 8 else 0
        if source not in self.windows:
            self.windows[source] = _window(self.grid, source, self.y0, self.x0, self.size)
        return dihedral(self.windows[source], o, dims=(1, 2))


def grid_heatmap(nets: Sequence[NICNet], grid, target: Target, crop_size: int, views: int = 8) -> np.ndarray:
    """(H, W) Grad-CAM of ``target`` over a whole grid (O, C, H, W: a store's embeddings, or any
    array that slices), averaged over ``nets`` (the fold models of a run), crops and views."""
    orientations, _, H, W = grid.shape
    total, count = np.zeros((H, W), np.float64), np.zeros((H, W), np.float64)
    for y0 in tile_starts(H, crop_size):
        for x0 in tile_starts(W, crop_size):
            view = _Views(grid, orientations, y0, x0, crop_size)
            cam = np.mean([crop_cam(net, view, views, target).numpy() for net in nets], axis=0)
            ya, yb, xa, xb = max(y0, 0), min(y0 + crop_size, H), max(x0, 0), min(x0 + crop_size, W)
            total[ya:yb, xa:xb] += cam[ya - y0 : yb - y0, xa - x0 : xb - x0]
            count[ya:yb, xa:xb] += 1
    return total / count
