"""Slide-level learning on compressed grids: labels, splits, crops, the NIC CNN, losses, metrics,
the training loop, prediction and evaluation."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ["crop_pmf", "evenly_spaced_centres", "keep_on_grid", "read_crop", "sample_centres"], "nic_ray.train.crops"
        ),
        **dict.fromkeys(["evaluate", "format_evaluation"], "nic_ray.train.evaluation"),
        **dict.fromkeys(["LabelError", "Labels", "Task", "load_labels", "parse_task"], "nic_ray.train.labels"),
        **dict.fromkeys(["cox_loss", "task_loss"], "nic_ray.train.losses"),
        **dict.fromkeys(["bootstrap_intervals", "c_index", "task_metrics"], "nic_ray.train.metrics"),
        "NICNet": "nic_ray.train.nic_cnn",
        "TrainOptions": "nic_ray.train.options",
        "predict": "nic_ray.train.prediction",
        "plan_splits": "nic_ray.train.splits",
        "train": "nic_ray.train.trainer",
    },
)
