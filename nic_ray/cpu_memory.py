"""Keeping freed memory for reuse in processes that run torch on the CPU.

glibc hands allocations above 128 KiB to the kernel and back on every free. A training step
allocates and frees hundreds of megabytes of activations, which the kernel must then zero and
fault in again at the next step: on a CPU that doubled or tripled the time of a NIC CNN step,
most of it system time. Raising the thresholds keeps those pages in the heap for the next step.

That holds for the main arena only. glibc gives other threads arenas of their own, whose large
blocks it maps and unmaps whatever the thresholds say, and Ray runs work in such threads (Ray
Data's actor calls, Ray Train's loop): an encoder actor spent a third of its time in the kernel.
Their processes get `WORKER_ENV` at start (one arena for every thread), as a Ray runtime_env.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_KEEP = 2**31 - 1  # the largest value mallopt takes: 2 GiB

# Read by glibc when a process starts; too late to set from inside a Ray worker.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}


def worker_runtime_env() -> dict:
    """The Ray ``runtime_env`` of workers that run torch on a CPU in a thread."""
    return {"env_vars": dict(WORKER_ENV)}


def reuse_freed_memory() -> bool:
    """Make this process keep freed memory for reuse; False where libc is not glibc.

    >>> reuse_freed_memory()  # Linux
    True
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # One arena: threads started after this call share the main one, which keeps freed memory.
    return all(
        mallopt(option, value)
        for option, value in ((_M_MMAP_THRESHOLD, _KEEP), (_M_TRIM_THRESHOLD, _KEEP), (_M_ARENA_MAX, 1))
    )
