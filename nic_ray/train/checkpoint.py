"""Training state ↔ a checkpoint directory: safetensors for tensors, JSON for the rest, no pickle.

```
model.safetensors      the weights after the epoch
best.safetensors       the weights of the best epoch so far (what the run keeps in the end)
optimizer.safetensors  Adam's moments, keyed "<param index>.<name>" (`save_optimizer`)
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


def save_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer, name: str = "optimizer") -> list[dict]:
    """Write the optimizer's moments to ``<name>.safetensors``; return its param groups (for JSON)."""
    opt = optimizer.state_dict()
    moments = {f"{i}.{key}": v.contiguous() for i, s in opt["state"].items() for key, v in s.items()}
    safetensors.torch.save_file(moments, str(Path(directory) / f"{name}.safetensors"))
    return opt["param_groups"]


def load_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer, param_groups: list[dict],
                   name: str = "optimizer") -> None:
    moments: dict[int, dict] = {}
    for key, value in safetensors.torch.load_file(str(Path(directory) / f"{name}.safetensors")).items():
        index, moment = key.split(".", 1)
        moments.setdefault(int(index), {})[moment] = value
    optimizer.load_state_dict({"state": moments, "param_groups": param_groups})


def save_state(directory: str | Path, net: torch.nn.Module, best: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scheduler, state: dict) -> None:
    directory = Path(directory)
    safetensors.torch.save_file(_weights(net), str(directory / "model.safetensors"))
    safetensors.torch.save_file(best, str(directory / "best.safetensors"))
    state = {**state, "param_groups": save_optimizer(directory, optimizer), "scheduler": scheduler.state_dict()}
    (directory / "state.json").write_text(json.dumps(state))


def load_state(directory: str | Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore ``net``, ``optimizer`` and ``scheduler`` in place; return (state, best weights)."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    net.load_state_dict(safetensors.torch.load_file(str(directory / "model.safetensors")))
    load_optimizer(directory, optimizer, state.pop("param_groups"))
    scheduler.load_state_dict(state.pop("scheduler"))
    return state, safetensors.torch.load_file(str(directory / "best.safetensors"))


def load_best(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(state, best weights) of a checkpoint, without building the model."""
    directory = Path(directory)
    return json.loads((directory / "state.json").read_text()), safetensors.torch.load_file(str(directory / "best.safetensors"))
