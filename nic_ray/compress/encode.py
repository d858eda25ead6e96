"""The encoder actor: reads, encodes and writes one block per call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from nic_ray.compress.stages import Settings, read_tiles, write_codes
from nic_ray.cpu_memory import reuse_freed_memory
from nic_ray.dihedral import dihedral
from nic_ray.encoders import load_encoder

# A block reading while another encodes; more calls would only queue for the same two locks.
CONCURRENT_CALLS = 2


class EncodeBlocks:
    """Ray's batch-inference pattern: the encoder loads once per actor, a block per call.

    The actor decodes its block's tiles (in ``threads`` threads) and writes the block's chunk
    itself: moving decoded pixels between processes through Ray's object store costs more than
    decoding them, and a write task per chunk more than the write (README, "Compression").

    On a GPU, Ray Data runs two calls at once in each actor (`CONCURRENT_CALLS`): one block is
    read while the block before it is encoded, so the GPU does not wait for the reading. A lock
    for each stage keeps to one read and one encoding at a time.
    """

    def __init__(
        self, encoder: str, encoder_kwargs: dict, settings: Settings, batch_size: int, use_gpu: bool, threads: int = 1
    ):
        torch.set_num_threads(threads)  # the CPUs this actor reserved, no more
        reuse_freed_memory()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.encoder = load_encoder(encoder, **encoder_kwargs).to(self.device)
        self.settings, self.batch_size, self.threads = settings, batch_size, threads
        self.pool = ThreadPoolExecutor(threads)
        self.reading, self.encoding = threading.Lock(), threading.Lock()

    @torch.inference_mode()
    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """(n, P, P, 3) uint8 → (n, O, C) float16; each tile in each orientation."""
        codes = []
        for start in range(0, len(tiles), self.batch_size):
            # uint8 travels to the device and is converted there (4× less to copy).
            x = torch.from_numpy(tiles[start : start + self.batch_size]).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                per_o = [
                    self.encoder(dihedral(x, o, dims=(1, 2)).contiguous()) for o in range(self.settings.orientations)
                ]
            codes.append(torch.stack(per_o, dim=1).to(torch.float16).cpu())
        if not codes:
            return np.zeros((0, self.settings.orientations, self.encoder.code_size), np.float16)
        return torch.cat(codes).numpy()

    def __call__(self, batch: dict) -> dict:
        """Read, encode and write one block; only a small account of it goes back."""
        row = {k: v[0] for k, v in batch.items()}
        error, n_tiles, seconds = str(row["error"]), 0, [0.0, 0.0, 0.0]
        if not error and row["y0"] >= 0:
            with self.reading:
                t0 = time.perf_counter()
                cells, tiles, error = read_tiles(row, self.settings, self.pool, self.threads)
                t1 = time.perf_counter()
            if not error:
                with self.encoding:
                    t2 = time.perf_counter()
                    codes = self.encode(tiles)
                    t3 = time.perf_counter()
                write_codes(row, cells, codes, self.settings)
                n_tiles, seconds = len(cells), [t1 - t0, t3 - t2, time.perf_counter() - t3]
        return {
            "slide_id": batch["slide_id"],
            "n_blocks": batch["n_blocks"],
            "error": np.array([error]),
            "n_tiles": np.array([n_tiles]),
            "read_seconds": np.array([seconds[0]]),
            "encode_seconds": np.array([seconds[1]]),
            "write_seconds": np.array([seconds[2]]),
        }
