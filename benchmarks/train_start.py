"""What a small training costs besides its steps, side by side in one run: `train` on a small
cohort with Ray Train's controller polling its workers every 2 s (Ray's default) and every
`nic_ray.runtime.trainer.POLL_SECONDS` (what `fit` sets unless RAY_TRAIN_HEALTH_CHECK_INTERVAL_S is).

Each round trains one run of each, in turn (medians reported): ``--epochs`` epochs of
``--steps`` steps of the training tests' small CNN on 28 slides' mean-RGB grids. The controller
hears of a started and a finished run only when it polls, so on a run of seconds the interval is
a visible share of it.

    ./dev bench train_start [--rounds 3] [--epochs 2] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from nic_ray.compress import compress
from nic_ray.datasets.cohort import write_stained_cohort
from nic_ray.runtime.trainer import POLL_SECONDS
from nic_ray.train import train

SMALL_CNN = {"crop_size": 24, "strides": (2, 2, 1, 1), "width": 16, "batch_size": 16, "loader_workers": 1}
VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    ray.init(logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_stained_cohort(Path(tmp), 28)
        store = root / "store.zarr"
        assert compress([str(root / "slides")], str(store), encoder="mean-rgb", patch_size=32, progress=False).ok
        seconds: dict[str, list[float]] = {"2": [], POLL_SECONDS: []}
        for r in range(args.rounds):
            for poll, times in seconds.items():
                os.environ[VARIABLE] = poll
                start = time.perf_counter()
                train(
                    store,
                    root / "labels.csv",
                    ["label:binary:label"],
                    root / f"run-{r}-{poll}",
                    epochs=args.epochs,
                    steps_per_epoch=args.steps,
                    **SMALL_CNN,
                )
                times.append(time.perf_counter() - start)
    median = {poll: statistics.median(times) for poll, times in seconds.items()}
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "epochs": args.epochs,
                "steps_per_epoch": args.steps,
                "seconds_by_poll_interval": {p: [round(t, 1) for t in times] for p, times in seconds.items()},
                "median_seconds": {p: round(m, 1) for p, m in median.items()},
                "ratio_default_over_ours": round(median["2"] / median[POLL_SECONDS], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
