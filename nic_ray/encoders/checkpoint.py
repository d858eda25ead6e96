"""Encoder checkpoints: a directory with ``config.json`` and ``model.safetensors``.

Nothing is ever unpickled: the config names the architecture (a registered name or an import
path) and its options, the weights are plain tensors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
from torch import nn

from nic_ray.encoders.registry import create_encoder
from nic_ray.errors import EncoderError

FORMAT_VERSION = 1


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def save_encoder(encoder: nn.Module, directory: str | Path) -> Path:
    """Write ``encoder`` (built by `create_encoder`/`load_encoder`) to ``directory``.

    Example::

        save_encoder(load_encoder("nic"), "runs/nic-random")
        load_encoder("runs/nic-random")  # the same weights, no pickle
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, **encoder.config}
    safetensors.torch.save_file(_state(encoder), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_checkpoint(directory: str | Path) -> nn.Module:
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
        kwargs = {k: v for k, v in config.items() if k not in ("format_version", "architecture")}
        architecture = config["architecture"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EncoderError(f"{directory}: bad config.json ({e})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise EncoderError(
            f"{directory}: checkpoint format {config.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    encoder = create_encoder(architecture, **kwargs)
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise EncoderError(f"{directory}: model.safetensors is missing")
    try:
        encoder.load_state_dict(safetensors.torch.load_file(str(weights)))
    except (RuntimeError, safetensors.SafetensorError) as e:
        raise EncoderError(f"{directory}: weights do not fit {architecture!r} ({str(e).splitlines()[0]})") from None
    return encoder


def _state(encoder: nn.Module) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}


def encoder_sha256(encoder: nn.Module) -> str:
    """The identity of an encoder: its config and every weight, hashed. Stores record it."""
    digest = hashlib.sha256(json.dumps(encoder.config, sort_keys=True).encode())
    for name, tensor in sorted(_state(encoder).items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def encoder_identity(name: str, encoder: nn.Module) -> dict:
    """What a store records of the encoder that filled it (docs/design.md, "Store format")."""
    return {
        "name": str(name),
        "sha256": encoder_sha256(encoder),
        "code_size": encoder.code_size,
        "patch_size": encoder.patch_size,
        "mpp": encoder.mpp,
    }
