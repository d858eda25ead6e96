"""Training crops read from a store by threads, a few batches ahead of the training step.

A `Draws` sampler picks slides (class-balanced if asked) and a seed per crop; a `CropLoader`
thread turns a batch of draws into crops written straight into the batch: for each (slide, seed)
a centre drawn from the slide's pmf, a random orientation of the store with its spatial transform,
and optionally a random grid-level dihedral transform. Only the chunks a crop touches are read,
through the store's own storage (local or ``s3://``).

Threads, not worker processes: a crop is file reads, blosc decoding and numpy copies, which all
release the GIL, and a batch made in this process lands in memory the process reuses. From worker
processes every batch came through fresh shared memory that both sides had to fault in, about
twice the CPU a crop (benchmarks/train.py).

Example::

    data = CropDataset("brca.zarr", ["s1", "s2"], {"grade": np.array([0.0, 1.0])}, crop_size=400)
    draws = Draws(balanced_weights(np.array([0, 1])), count=64, seed=0)
    for crops, targets in CropLoader(data, draws, batch_size=16, workers=2):
        ...
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch

from nic_ray.dihedral import ORIENTATIONS
from nic_ray.store.grid_reader import GridReader
from nic_ray.store.store import Store
from nic_ray.train.crops import crop_pmf, keep_on_grid, read_crop, sample_centres


def balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per-slide sampling weights that give every group (class; NaN is a group) equal mass.

    >>> balanced_weights(np.array([0, 0, 0, 1])).tolist()
    [0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 0.5]
    """
    keys = np.where(np.isnan(groups.astype(float)), -1, groups)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights / weights.sum()


class Draws:
    """``count`` draws of (slide index, crop seed) by ``weights``; a new stream each epoch and rank."""

    def __init__(self, weights: np.ndarray, count: int, seed: int, rank: int = 0):
        self.weights, self.count, self.seed, self.rank, self.epoch = weights, count, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.rank, self.epoch])
        slides = rng.choice(len(self.weights), size=self.count, p=self.weights)
        seeds = rng.integers(2**62, size=self.count)
        return iter(zip(slides.tolist(), seeds.tolist()))


class CropDataset:
    """float16 crops of ``slide_ids`` with their targets (task name → per-slide array, NaN = missing)."""

    def __init__(
        self,
        store_url: str,
        slide_ids: list[str],
        targets: dict[str, np.ndarray],
        crop_size: int,
        grid_dihedral: bool = True,
    ):
        self.store, self.slide_ids, self.crop_size = Store.open(store_url), list(slide_ids), crop_size
        self.targets = {name: np.asarray(v, np.float32) for name, v in targets.items()}
        self.grid_dihedral = grid_dihedral
        self.orientations = self.store.config.orientations
        self.code_size = self.store.config.encoder["code_size"]
        # The slide's reader and crop pmf, kept for the slides read most recently.
        self._slide = lru_cache(maxsize=256)(self._open_slide)

    def _open_slide(self, index: int) -> tuple[GridReader, np.ndarray]:
        reader, tissue = self.store.grid(self.slide_ids[index])
        return reader, crop_pmf(tissue)

    def read_batch(
        self, draws: list[tuple[int, int]], pin_memory: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, C, R, R) float16 crops of the (slide index, seed) ``draws``, and (B, k) targets per task."""
        size = self.crop_size
        # float16 as stored: half the bytes to write and to move to a GPU.
        crops = torch.empty((len(draws), self.code_size, size, size), dtype=torch.float16, pin_memory=pin_memory)
        for out, (index, seed) in zip(crops.numpy(), draws):
            rng = np.random.default_rng(seed)
            reader, pmf = self._slide(index)
            centre = keep_on_grid(sample_centres(pmf, 1, rng), pmf.shape, size)[0]
            orientation = int(rng.integers(self.orientations))
            turn = int(rng.integers(ORIENTATIONS)) if self.grid_dihedral else 0
            read_crop(reader, orientation, centre, size, turn=turn, out=out)
        indices = [index for index, _ in draws]
        return crops, {name: torch.from_numpy(v[indices].reshape(len(draws), -1)) for name, v in self.targets.items()}


def _yield_to_the_step() -> None:
    # On a shared CPU the loader should use the cycles the training step leaves idle, not take
    # cycles from it: it reads ahead, so running at low priority costs no waiting. Linux applies
    # a thread id's priority to that thread alone.
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class CropLoader:
    """Batches of ``dataset`` crops for ``draws``, read by ``workers`` threads ``workers + 1`` batches ahead.

    A last batch smaller than ``batch_size`` is dropped (BatchNorm needs equal, full batches).
    """

    def __init__(self, dataset: CropDataset, draws: Draws, batch_size: int, workers: int, pin_memory: bool = False):
        self.dataset, self.draws, self.batch_size, self.workers, self.pin_memory = (
            dataset,
            draws,
            batch_size,
            workers,
            pin_memory,
        )

    def __len__(self) -> int:
        return len(self.draws) // self.batch_size

    def __iter__(self):
        draws = iter(self.draws)
        batches = zip(*[draws] * self.batch_size)  # consecutive batch_size-tuples; a short rest is dropped
        initializer = _yield_to_the_step if sys.platform == "linux" else None
        with ThreadPoolExecutor(self.workers, thread_name_prefix="crops", initializer=initializer) as pool:
            pending = deque()
            for batch in batches:
                pending.append(pool.submit(self.dataset.read_batch, list(batch), self.pin_memory))
                if len(pending) > self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
