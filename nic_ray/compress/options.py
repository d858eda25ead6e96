"""What a compression run is asked (`CompressOptions`): the one definition of its options."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.errors import NicError
from nic_ray.options import option


@dataclass
class CompressOptions:
    """How `compress` encodes slides, and with which resources."""

    encoder: str = option("mean-rgb", "mean-rgb, nic, a checkpoint directory, or package.module:factory")
    mpp: float | None = option(None, "µm/px to compress at (default: the encoder's)", type=float)
    patch_size: int | None = option(None, "patch size (default: the encoder's)", type=int)
    stride: int | None = option(None, "grid stride in px (default: the patch size)", type=int)
    orientations: int = option(1, "8: every tile in all 8 dihedral orientations", choices=(1, 8))
    encoders: int | None = option(
        None,
        "encoder actors (default: from 1, growing while blocks queue, up to as many as the cluster holds beside "
        "planning slides)",
        type=int,
    )
    gpus_per_encoder: float = option(0.0, "GPUs per encoder actor; 0 = CPU")
    cpus_per_encoder: float = option(1.0, "CPUs per encoder actor: its decoding threads, and torch threads on CPU")
    encoder_resources: dict[str, float] = option(
        {},
        "a custom Ray resource each encoder actor needs (pins encoders to such nodes); repeatable",
        flag="encoder-resource",
    )
    batch_size: int = option(256, "tiles per encoder batch")
    tissue_threshold: float = option(0.1, "tissue fraction of a cell to encode it")
    overwrite: bool = option(False, "redo slides that are complete already")

    def __post_init__(self) -> None:
        if self.orientations not in (1, 8):
            raise NicError(f"--orientations must be 1 or 8, not {self.orientations}")
        for flag, value, least in (
            ("--encoders", 1 if self.encoders is None else self.encoders, 1),
            ("--batch-size", self.batch_size, 1),
            ("--cpus-per-encoder", self.cpus_per_encoder, 0),
            ("--gpus-per-encoder", self.gpus_per_encoder, 0),
        ):
            if value < least:
                raise NicError(f"{flag} must be at least {least}, not {value:g}")
        if not 0 <= self.tissue_threshold <= 1:
            raise NicError(f"--tissue-threshold is a fraction of a cell, from 0 to 1, not {self.tissue_threshold:g}")
