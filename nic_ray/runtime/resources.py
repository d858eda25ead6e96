"""Where a training runs (`Resources`): may change when a run is resumed."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option


@dataclass
class Resources:
    """Where the training runs; may change when a run is resumed."""

    workers: int = option(1, "Ray Train workers")
    gpus_per_worker: float = option(0.0, "GPUs per worker; 0 = CPU")
    cpus_per_worker: float = option(1.0, "CPUs per worker")
    loader_workers: int = option(2, "loader threads per worker, reading batches ahead of the step")
    max_failures: int = option(3, "worker-group restarts from the last checkpoint")

    def require(self) -> None:
        """Refuse at once what the cluster can never hold (one line), before any run is written."""
        from nic_ray.ray_cluster import require_resources

        require_resources(
            "training worker", {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}, count=self.workers
        )
