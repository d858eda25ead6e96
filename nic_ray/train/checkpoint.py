"""Training state ↔ a checkpoint directory: safetensors for tensors, JSON for the rest, no pickle.

```
model.safetensors      the weights after the epoch
best.safetensors       the weights of the best epoch so far (what the run keeps in the end)
optimizer.safetensors  Adam's moments, keyed "<param index>.<name>"
state.json             epoch, history, best, optimizer param groups, LR scheduler state
```
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_state(directory: str | Path, net: torch.nn.Module, best: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scheduler, state: dict) -> None:
    directory = Path(directory)
    opt = optimizer.state_dict()
    moments = {f"{i}.{name}": v for i, s in opt["state"].items() for name, v in s.items()}
    safetensors.torch.save_file(_weights(net), str(directory / "model.safetensors"))
    safetensors.torch.save_file(best, str(directory / "best.safetensors"))
    safetensors.torch.save_file({k: v.contiguous() for k, v in moments.items()}, str(directory / "optimizer.safetensors"))
    state = {**state, "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict()}
    (directory / "state.json").write_text(json.dumps(state))


def load_state(directory: str | Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore ``net``, ``optimizer`` and ``scheduler`` in place; return (state, best weights)."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    net.load_state_dict(safetensors.torch.load_file(str(directory / "model.safetensors")))
    moments: dict[int, dict] = {}
    for key, value in safetensors.torch.load_file(str(directory / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": state.pop("param_groups")})
    scheduler.load_state_dict(state.pop("scheduler"))
    return state, safetensors.torch.load_file(str(directory / "best.safetensors"))


def load_best(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(state, best weights) of a checkpoint, without building the model."""
    directory = Path(directory)
    return json.loads((directory / "state.json").read_text()), safetensors.torch.load_file(str(directory / "best.safetensors"))
