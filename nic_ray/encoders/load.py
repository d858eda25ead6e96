"""`load_encoder`: an encoder by registered name, checkpoint directory or import path."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from nic_ray.encoders import registry
from nic_ray.encoders.checkpoint import is_checkpoint, load_checkpoint
from nic_ray.errors import EncoderError


def load_encoder(name_or_path: str | Path, **kwargs) -> nn.Module:
    """The encoder named ``name_or_path``, in eval mode, ready to compress with.

    ``name_or_path`` is a registered name (``"mean-rgb"``, ``"nic"``), a checkpoint directory
    written by `save_encoder`, or ``package.module:factory``. Extra ``kwargs`` go to the
    architecture (for names and import paths).

    >>> load_encoder("mean-rgb").code_size
    3
    """
    text = str(name_or_path)
    if is_checkpoint(text):
        encoder = load_checkpoint(text)
    elif text in registry.list_encoders() or ":" in text:
        encoder = registry.create_encoder(text, **kwargs)
    elif Path(text).exists():
        raise EncoderError(f"{text}: not an encoder checkpoint (a directory with config.json and model.safetensors)")
    else:
        registry.factory(text)  # raises the "unknown encoder" error
    return encoder.eval()
