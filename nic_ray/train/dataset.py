"""Training crops read from a store, for a torch DataLoader whose workers read in parallel.

A `Draws` sampler picks slides (class-balanced if asked) and a seed per crop in the main
process; a `CropDataset` worker turns each (slide, seed) into a crop: a centre drawn from the
slide's pmf, a random orientation of the store with its spatial transform, and optionally a
random grid-level dihedral transform. Each worker opens the store itself and reads only the
chunks a crop touches, so the loader scales with workers and works the same on ``s3://``.

Example::

    data = CropDataset("brca.zarr", ["s1", "s2"], {"grade": np.array([0.0, 1.0])}, crop_size=400)
    draws = Draws(balanced_weights(np.array([0, 1])), count=64, seed=0)
    loader = make_loader(data, draws, batch_size=16, workers=2)
"""

from __future__ import annotations

import os
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nic_ray.compress.store import Store
from nic_ray.dihedral import ORIENTATIONS, dihedral
from nic_ray.train.crops import crop_pmf, read_crop, sample_centres


def balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per-slide sampling weights that give every group (class; NaN is a group) equal mass.

    >>> balanced_weights(np.array([0, 0, 0, 1])).tolist()
    [0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 0.5]
    """
    keys = np.where(np.isnan(groups.astype(float)), -1, groups)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights / weights.sum()


class Draws(Sampler):
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


class CropDataset(Dataset):
    """float16 crops of ``slide_ids`` with their targets (task name → per-slide array, NaN = missing)."""

    def __init__(self, store_url: str, slide_ids: list[str], targets: dict[str, np.ndarray], crop_size: int,
                 grid_dihedral: bool = True):
        self.store_url, self.slide_ids, self.crop_size = store_url, list(slide_ids), crop_size
        self.targets = {name: np.asarray(v, np.float32) for name, v in targets.items()}
        self.grid_dihedral = grid_dihedral
        self.orientations = Store.open(store_url).config.orientations
        self._store: Store | None = None
        self._slides: dict = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_slides": {}}  # each worker opens its own

    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.store_url)
        return self._store

    def _slide(self, index: int):
        """The slide's lazy array and crop pmf, kept for the most recent slides this worker read."""
        if index not in self._slides:
            if len(self._slides) >= 256:
                self._slides.pop(next(iter(self._slides)))
            array, tissue = self.store().grid(self.slide_ids[index])
            self._slides[index] = array, crop_pmf(tissue)
        return self._slides[index]

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getitem__(self, draw: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, seed = draw
        rng = np.random.default_rng(seed)
        array, pmf = self._slide(index)
        centre = sample_centres(pmf, 1, rng)[0]
        # float16 as stored: half the bytes to copy and to pass between processes.
        crop = read_crop(array, int(rng.integers(self.orientations)), centre, self.crop_size, np.float16)
        if self.grid_dihedral:
            crop = dihedral(crop, int(rng.integers(ORIENTATIONS)), dims=(1, 2))
        targets = {name: torch.from_numpy(np.atleast_1d(v[index])) for name, v in self.targets.items()}
        return torch.from_numpy(np.ascontiguousarray(crop)), targets


def _yield_to_the_step(_worker: int) -> None:
    # On a shared CPU the loader should use the cycles the training step leaves idle, not take
    # cycles from it: it reads ahead several batches, so running at low priority costs no waiting.
    os.nice(10)


def make_loader(dataset: CropDataset, draws: Draws, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose ``workers`` processes read crops in parallel and stay up across epochs."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=draws, num_workers=workers, drop_last=True, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None, worker_init_fn=_yield_to_the_step,
        # zarr runs an event-loop thread; a forked child would inherit it stopped, and hang.
        multiprocessing_context="forkserver" if workers else None,
    )
