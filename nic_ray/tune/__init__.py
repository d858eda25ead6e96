"""Ray Tune sweeps of slide-level models: a search space, trials of the project's own Ray Train
loop, ASHA and Optuna, resumable on the sweep's storage."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["Space", "SpaceError", "default_space", "load_space"], "nic_ray.tune.space"),
        **dict.fromkeys(["SweepResult", "sweep"], "nic_ray.tune.tuner"),
    },
)
