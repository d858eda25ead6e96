"""Slide-level learning on compressed grids: labels, crops, the NIC CNN, losses, metrics.

The dataset, the Ray Train loop, evaluation and prediction land with issue 4.
"""

from nic_ray.train.crops import crop_pmf, evenly_spaced_centres, read_crop, sample_centres
from nic_ray.train.labels import LabelError, Labels, Task, load_labels, parse_task
from nic_ray.train.losses import cox_loss
from nic_ray.train.metrics import c_index
from nic_ray.train.nic_cnn import NICNet

__all__ = [
    "LabelError", "Labels", "NICNet", "Task", "c_index", "cox_loss", "crop_pmf", "evenly_spaced_centres",
    "load_labels", "parse_task", "read_crop", "sample_centres",
]
