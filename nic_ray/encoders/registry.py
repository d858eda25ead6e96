"""Encoders by name: a registry of architectures, built from a config that travels with them.

An encoder is a ``torch.nn.Module`` mapping uint8 patches (N, P, P, 3) to float codes (N, C),
with attributes ``code_size`` (C), ``patch_size`` (P) and ``mpp`` (the µm/px it expects), and a
``config`` dict from which ``create_encoder(**config)`` builds it again (docs/design.md, Encoders).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from nic_ray.errors import EncoderError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable:
    """Class or factory decorator: make an architecture buildable by ``name``."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = factory
        return factory

    return add


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def factory(architecture: str) -> Callable[..., nn.Module]:
    if architecture in _REGISTRY:
        return _REGISTRY[architecture]
    if ":" in architecture:  # a user's own module: package.module:factory
        module_name, _, attr = architecture.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise EncoderError(f"encoder {architecture!r}: cannot import it ({e})") from None
    raise EncoderError(
        f"unknown encoder {architecture!r}: expected one of {', '.join(list_encoders())}, "
        "a checkpoint directory, or package.module:factory"
    )


def create_encoder(architecture: str, seed: int = 0, **kwargs) -> nn.Module:
    """A freshly initialised encoder; the same ``seed`` gives the same weights.

    >>> patches = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8)
    >>> a, b = create_encoder("nic", code_size=64).eval(), create_encoder("nic", code_size=64).eval()
    >>> a(patches).shape, torch.equal(a(patches), b(patches))
    (torch.Size([2, 64]), True)
    >>> torch.equal(a(patches), create_encoder("nic", seed=1, code_size=64).eval()(patches))
    False
    """
    build = factory(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            encoder = build(**kwargs)
        except TypeError as e:
            raise EncoderError(f"encoder {architecture!r}: bad options ({e})") from None
    _check(encoder, architecture)
    # Keep what rebuilds it: user factories need not know about configs.
    encoder.config = {"architecture": architecture, **getattr(encoder, "config", kwargs)}
    return encoder


def _check(encoder: object, name: str) -> None:
    if not isinstance(encoder, nn.Module):
        raise EncoderError(f"encoder {name!r}: the factory returned {type(encoder).__name__}, not a torch.nn.Module")
    for attr, kind in (("code_size", int), ("patch_size", int), ("mpp", (int, float))):
        if not isinstance(getattr(encoder, attr, None), kind):
            raise EncoderError(f"encoder {name!r}: it needs an attribute {attr!r} ({kind})")
