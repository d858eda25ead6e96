"""How long the light subcommands take to start: ``nic-ray --help`` and ``nic-ray status`` in a
fresh interpreter, side by side with a bare interpreter and with one that imports what the
command line used to load for its parser (torch and Ray Train).

    ./dev bench cli [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from nic_ray.store import Store, StoreConfig

CASES = {
    "python -c pass": "pass",
    "nic-ray --help": "from nic_ray.cli import main; main(['--help'])",
    "nic-ray status STORE": "from nic_ray.cli import main; main(['status', {store!r}])",
    "import torch, ray.train (the old parser's cost)": "import torch, ray.train",
}


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = {"name": "mean-rgb", "sha256": "0" * 64, "code_size": 3, "patch_size": 128, "mpp": 0.5}
        store = f"{tmp}/s.zarr"
        Store.create_or_open(store, StoreConfig(encoder, 128, 1))
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.rounds):  # alternating, so that drift hits every case alike
            for name, code in CASES.items():
                times[name].append(seconds(code.format(store=store)))
    bare = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:50} {median:6.2f} s  ({median - bare:+.2f} s over a bare interpreter)")


if __name__ == "__main__":
    main()
