"""Sweeps against the same trials run one after another: trials per hour, and the share of the
machine's CPU busy, side by side in one run.

  (sweep)      `sweep`: N trials of a space (seeded random search, no early stopping), as many at
               once as the cluster holds (one Ray Train worker of one CPU each)
  (one by one) the same N configurations, each trained with `train` after the last ended, as a
               user without a sweep would script `nic-ray train`
  (asha)       the sweep again with ASHA (grace period 1): poor trials stopped early

The cohort is `write_stained_cohort`'s (mean-RGB grids of 32×32 cells; binary label); the CNN the
small one of the training tests. CPU busy is psutil's machine-wide share, sampled every 0.5 s.

    ./dev bench tune [--slides 28] [--trials 6] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import ray

from nic_ray.compress import compress
from nic_ray.datasets.cohort import write_stained_cohort
from nic_ray.datasets.samples import data_dir
from nic_ray.train import train
from nic_ray.tune import sweep
from nic_ray.tune.space import trial_options

TASK = "label:binary:label"
BASE = {"crop_size": 24, "dropout": 0.0, "batch_size": 8, "steps_per_epoch": 8, "loader_workers": 1}
SPACE = "lr: {loguniform: [1.0e-4, 1.0e-2]}\nwidth: {choice: [8, 16, 32]}\ndepth: {randint: [3, 4]}\n"


class CpuBusy:
    """The machine's mean CPU busy share while the block runs."""

    def __enter__(self):
        self.samples, self.stop = [], threading.Event()
        psutil.cpu_percent()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self):
        while not self.stop.wait(0.5):
            self.samples.append(psutil.cpu_percent())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.stop.set()
        self.thread.join()
        self.busy = sum(self.samples) / max(1, len(self.samples)) / 100


def cohort(slides: int) -> Path:
    root = data_dir() / "bench" / f"cohort-{slides}"
    if not (root / "labels.csv").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        write_stained_cohort(root, slides)
    if not compress([str(root / "slides")], str(root / "rgb.zarr"), patch_size=32, progress=False).ok:
        raise SystemExit("compressing the cohort failed")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=28)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    ray.init(logging_level="WARNING")  # with its dashboard: ASHA needs the state API
    root = cohort(args.slides)
    store, labels = str(root / "rgb.zarr"), str(root / "labels.csv")
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    (work / "space.yaml").write_text(SPACE)
    common = {"space": str(work / "space.yaml"), "trials": args.trials, "epochs": args.epochs, "search": "random"}
    rows = []

    with CpuBusy() as cpu:
        result = sweep([store], labels, [TASK], work / "sweep", scheduler="none", **common, **BASE)
    rows.append(("sweep", args.trials, cpu, result.trials.column("epochs").to_pylist()))

    configs = pq.read_table(work / "sweep" / "trials.parquet").select(["lr", "width", "depth"]).to_pylist()
    with CpuBusy() as cpu:
        for i, config in enumerate(configs):
            options = {**BASE, **trial_options(config)}
            train(store, labels, [TASK], work / f"one-by-one-{i}", epochs=args.epochs, **options)
    rows.append(("one by one", len(configs), cpu, [args.epochs] * len(configs)))

    with CpuBusy() as cpu:
        result = sweep([store], labels, [TASK], work / "asha", scheduler="asha", grace_period=1, **common, **BASE)
    rows.append(("asha", args.trials, cpu, result.trials.column("epochs").to_pylist()))

    print(f"\n{'':12} {'trials':>6} {'epochs':>6} {'wall s':>7} {'trials/h':>9} {'CPU busy':>9}")
    for name, n, cpu, epochs in rows:
        print(f"{name:12} {n:6} {sum(epochs):6} {cpu.seconds:7.1f} {3600 * n / cpu.seconds:9.0f} {cpu.busy:9.0%}")
    ratio = rows[1][2].seconds / rows[0][2].seconds
    print(f"sweep vs one by one: {ratio:.2f}x the trials per hour")
    print(json.dumps({n: {"seconds": round(c.seconds, 1), "busy": round(c.busy, 3)} for n, _, c, _ in rows}))


if __name__ == "__main__":
    main()
