"""How a sweep searches (`SweepOptions`); the trials' own options are `TrainOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option


@dataclass
class SweepOptions:
    """How many trials, which metric, how the next trials are chosen and the poor ones stopped."""

    trials: int = option(16, "trials (configurations) to run")
    metric: str = option("val_loss", "the reported metric to optimise, e.g. val_auc_label or val_c_index_os")
    mode: str = option("", "min or max (default: min for a loss, else max)", choices=("", "min", "max"))
    search: str = option("optuna", "how configurations are proposed", choices=("optuna", "random"))
    scheduler: str = option("asha", "asha stops poor trials early; none runs each to the end", choices=("asha", "none"))
    grace_period: int = option(2, "epochs every trial runs before ASHA may stop it")
    reduction_factor: float = option(2.0, "ASHA keeps 1 in this many trials at each rung")
    max_concurrent: int = option(0, "most trials at once (default: as many as the cluster holds)")
