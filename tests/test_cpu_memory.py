"""Freed memory is kept for reuse where Ray runs torch: in the threads of its workers.

Measured with the kernel's own count of page faults (getrusage) in the thread that runs a Ray
Data actor's calls, on a batch of NIC first-layer activations (130 MB) freed and made again as a
training step or an encoder call does.
"""

import resource

import numpy as np
import pytest
import ray.data
import torch

from nic_ray.cpu_memory import reuse_freed_memory, worker_runtime_env

ROUNDS = 8
BATCH, OUT = (64, 3, 128, 128), (64, 128, 63, 63)  # the NIC encoder's first conv


class FaultCount:
    """A Ray Data actor like the encoder's: sets up in ``__init__``, allocates in ``__call__``."""

    def __init__(self):
        reuse_freed_memory()

    def __call__(self, batch: dict) -> dict:
        conv, x = torch.nn.Conv2d(3, 128, 3, stride=2), torch.ones(BATCH)
        with torch.inference_mode():
            conv(x).sum()  # the first round faults its pages in whatever the allocator does
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for _ in range(ROUNDS):
                conv(x).sum()
        return {"faults": np.array([resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before])}


def faults_in_actor(**remote_args) -> int:
    ds = ray.data.range(1).map_batches(
        FaultCount, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, **remote_args
    )
    return int(ds.take_all()[0]["faults"])


@pytest.mark.usefixtures("ray_session")
def test_ray_worker_threads_reuse_freed_memory_with_the_worker_env():
    pages = np.prod(OUT) * 4 // resource.getpagesize()  # of one round's activations
    # Without it, every round faults all its pages in again: mallopt does not reach the thread.
    assert faults_in_actor() > (ROUNDS - 1) * pages
    # With it, the rounds reuse the pages of the first: one more set at most, as buffers alternate,
    # and a few pages of other allocations (a run here once counted 2 sets + 16 pages).
    assert faults_in_actor(runtime_env=worker_runtime_env()) < 3 * pages
