"""Slide-level learning on compressed grids: labels, splits, crops, the NIC CNN, losses, metrics,
the Ray Train loop, prediction and evaluation."""

from nic_ray.train.crops import crop_pmf, evenly_spaced_centres, read_crop, sample_centres
from nic_ray.train.evaluate import evaluate, format_evaluation
from nic_ray.train.labels import LabelError, Labels, Task, load_labels, parse_task
from nic_ray.train.losses import cox_loss, task_loss
from nic_ray.train.metrics import bootstrap_intervals, c_index, task_metrics
from nic_ray.train.nic_cnn import NICNet
from nic_ray.train.predict import predict
from nic_ray.train.splits import plan_splits
from nic_ray.train.trainer import train

__all__ = [
    "LabelError", "Labels", "NICNet", "Task", "bootstrap_intervals", "c_index", "cox_loss", "crop_pmf",
    "evaluate", "evenly_spaced_centres", "format_evaluation", "load_labels", "parse_task", "plan_splits", "predict",
    "read_crop", "sample_centres", "task_loss", "task_metrics", "train",
]
