"""Slide-level learning on compressed grids: crops, the NIC CNN, losses, metrics.

The dataset, the Ray Train loop, evaluation and prediction land with issue 4.
"""

from nic_ray.train.crops import crop_pmf, evenly_spaced_centres, read_crop, sample_centres
from nic_ray.train.losses import cox_loss
from nic_ray.train.metrics import c_index
from nic_ray.train.nic_cnn import NICNet

__all__ = ["NICNet", "c_index", "cox_loss", "crop_pmf", "evenly_spaced_centres", "read_crop", "sample_centres"]
