"""Patch encoders: the registry, the built-in architectures, checkpoints (docs/design.md, Encoders)."""

from nic_ray.encoders import mean_rgb, nic  # noqa: F401  (register the built-in architectures)
from nic_ray.encoders.checkpoint import encoder_identity, encoder_sha256, save_encoder
from nic_ray.encoders.load import load_encoder
from nic_ray.encoders.registry import create_encoder, list_encoders, register_encoder

__all__ = [
    "create_encoder",
    "encoder_identity",
    "encoder_sha256",
    "list_encoders",
    "load_encoder",
    "register_encoder",
    "save_encoder",
]
