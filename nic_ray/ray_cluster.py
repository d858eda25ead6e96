"""Joining Ray, and failing at once where the cluster can never have what a job asks for.

Ray would otherwise wait (30 minutes for GPUs, for ever for an actor pool that leaves no CPU to
the tasks feeding it) for resources that never come.
"""

from __future__ import annotations

import ray

from nic_ray.errors import NicError


def ensure_ray() -> None:
    """Join the cluster this process was started for, or start an embedded local one."""
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")


def cluster_capacity() -> dict[str, float]:
    """The most of each resource the cluster can have: what its autoscaler may grow it to where
    the autoscaler publishes that (v2, as cluster/ configures it), else what it has now."""
    # The rule Ray Data itself follows (hash_shuffle's _get_total_cluster_resources).
    return ray._private.state.state.get_max_resources_from_cluster_config() or ray.cluster_resources()


def require_resources(
    who: str,
    each: dict[str, float],
    count: int = 1,
    besides: tuple[str, dict[str, float]] = ("", {}),
    hint: str = "",
) -> None:
    """Refuse at once when the cluster can never hold ``count`` ``who``s needing ``each`` apiece
    and, beside them, ``besides`` = (what for, resources); ``hint``, what to do, replaces the
    default (ask for less).

    Example::

        require_resources("encoder", {"CPU": 2}, count=3, besides=("planning slides", {"CPU": 1}))
    """
    ensure_ray()
    have = cluster_capacity()
    what_for, extra = besides
    # A kind of node the cluster lacks (a custom resource, a GPU) before its count of CPUs: the
    # scarcer says more, and one order makes one message.
    for name in sorted(each.keys() | extra.keys(), key=lambda n: ({"GPU": 1, "CPU": 2}.get(n, 0), n)):
        one, more = each.get(name, 0), extra.get(name, 0)
        if count * one + more <= have.get(name, 0):
            continue
        asked = f"each {who} needs {one:g} {name}" if count == 1 else f"{count} {who}s × {one:g} {name}"
        if more:
            asked += f" and {more:g} for {what_for}: {count * one + more:g} {name}"
        if not hint:
            hint = "ask for 0 GPUs to run on CPU" if name == "GPU" else f"ask for fewer {who}s or fewer {name}s each"
        raise NicError(f"{asked}, but the Ray cluster has at most {have.get(name, 0):g}; {hint}")


def fitting_count(each: dict[str, float], besides: tuple[str, dict[str, float]] = ("", {})) -> int:
    """How many holders of ``each`` the cluster can hold beside ``besides`` (at least 1; whether
    one fits is `require_resources`' to say).

    Example::

        fitting_count({"CPU": 1}, besides=("planning slides", {"CPU": 1}))  # 15 on 16 CPUs
    """
    ensure_ray()
    have, extra = cluster_capacity(), besides[1]
    counts = [(have.get(name, 0) - extra.get(name, 0)) // amount for name, amount in each.items() if amount > 0]
    return max(1, int(min(counts, default=1)))
