"""Progress published through Ray's metrics API: the Ray dashboard's charts and the Prometheus
endpoint of each node (as ``ray_nic_ray_*``) show what compression and training are doing.

Example::

    published = CompressionMetrics("s3://lab/stores/brca.zarr")
    published.slide("complete", tiles=4_096, tiles_per_second=812.0)
"""

from __future__ import annotations

import math

from ray.util.metrics import Counter, Gauge


def _tagged(metric, **tags):
    metric.set_default_tags(tags)
    return metric


class CompressionMetrics:
    """A compression run's slides complete and failed, tiles encoded and tiles/s, by store."""

    def __init__(self, store: str):
        keys = ("store",)
        self.complete = _tagged(Counter("nic_ray_slides_complete", "slides compressed", keys), store=store)
        self.failed = _tagged(Counter("nic_ray_slides_failed", "slides that failed", keys), store=store)
        self.tiles = _tagged(Counter("nic_ray_tiles_encoded", "tiles encoded", keys), store=store)
        self.rate = _tagged(Gauge("nic_ray_tiles_per_second", "tiles encoded a second, so far", keys), store=store)

    def slide(self, status: str, tiles: int, tiles_per_second: float) -> None:
        (self.complete if status == "complete" else self.failed).inc()
        if tiles:
            self.tiles.inc(tiles)
        self.rate.set(tiles_per_second)


class TrainingMetrics:
    """A training part's epoch, losses and validation metrics, by run and part."""

    def __init__(self, run: str, part: str):
        keys = ("run", "part")
        self.epoch = _tagged(Gauge("nic_ray_epoch", "epochs trained", keys), run=run, part=part)
        self.values = _tagged(
            Gauge("nic_ray_train_metric", "the last epoch's loss or validation metric", (*keys, "metric")),
            run=run,
            part=part,
        )

    def epoch_ended(self, epoch: int, values: dict[str, float]) -> None:
        """``values``: the losses and validation metrics the epoch's progress line shows."""
        self.epoch.set(epoch)
        for name, value in values.items():
            if not math.isnan(value):  # a metric a part's slides cannot give (one class)
                self.values.set(value, tags={"metric": name})
