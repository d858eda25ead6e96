"""Slide-level learning on compressed grids: losses and metrics (the rest lands with issue 4)."""

from nic_ray.train.losses import cox_loss
from nic_ray.train.metrics import c_index

__all__ = ["c_index", "cox_loss"]
