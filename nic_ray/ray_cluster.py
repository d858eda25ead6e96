"""Joining Ray, and failing at once where the cluster lacks what a job asks for.

Ray would otherwise wait (30 minutes for GPUs) for resources that never come.
"""

from __future__ import annotations

import ray

from nic_ray.errors import NicError


def ensure_ray() -> None:
    """Join the cluster this process was started for, or start an embedded local one."""
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")


def require_resources(who: str, each: dict[str, float]) -> None:
    """Refuse at once when the cluster cannot place even one ``who`` needing ``each``."""
    ensure_ray()
    have = ray.cluster_resources()
    for name, amount in each.items():
        if amount and have.get(name, 0) < amount:
            raise NicError(f"each {who} needs {amount:g} {name}, but the Ray cluster has {have.get(name, 0):g}"
                           + ("; ask for 0 GPUs to run on CPU" if name == "GPU" else ""))
