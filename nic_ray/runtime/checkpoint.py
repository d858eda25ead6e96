"""Training state ↔ a checkpoint directory: safetensors for tensors, JSON for the rest, no pickle.

```
<name>.safetensors             each set of weights saved (e.g. "model", "best", "objective")
optimizer-<name>.safetensors   each optimizer's moments, keyed "<param index>.<moment>"
state.json                     epoch, history, …, and each optimizer's param groups
```

Example::

    save_checkpoint(directory, {"model": net.state_dict()}, {"adam": optimizer}, {"epoch": 3})
    state, weights = load_checkpoint(directory, {"adam": optimizer})  # optimizer restored in place
    net.load_state_dict(weights["model"])
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

_OPTIMIZER = "optimizer-"


def snapshot(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a state dict on the CPU, unchanged by later training steps."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}


def save_checkpoint(
    directory: str | Path,
    weights: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
) -> None:
    directory = Path(directory)
    for name, tensors in weights.items():
        safetensors.torch.save_file(snapshot(tensors), str(directory / f"{name}.safetensors"))
    groups = {}
    for name, optimizer in optimizers.items():
        saved = optimizer.state_dict()
        moments = {f"{i}.{key}": v.contiguous() for i, s in saved["state"].items() for key, v in s.items()}
        safetensors.torch.save_file(moments, str(directory / f"{_OPTIMIZER}{name}.safetensors"))
        groups[name] = saved["param_groups"]
    (directory / "state.json").write_text(json.dumps({**state, "param_groups": groups}))


def load_checkpoint(
    directory: str | Path, optimizers: dict[str, torch.optim.Optimizer] | None = None
) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(state, weights by name); ``optimizers`` are restored in place."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    groups = state.pop("param_groups")
    for name, optimizer in (optimizers or {}).items():
        moments: dict[int, dict] = {}
        for key, value in safetensors.torch.load_file(str(directory / f"{_OPTIMIZER}{name}.safetensors")).items():
            index, moment = key.split(".", 1)
            moments.setdefault(int(index), {})[moment] = value
        optimizer.load_state_dict({"state": moments, "param_groups": groups[name]})
    weights = {
        p.name.removesuffix(".safetensors"): safetensors.torch.load_file(str(p))
        for p in directory.glob("*.safetensors")
        if not p.name.startswith(_OPTIMIZER)
    }
    return state, weights
