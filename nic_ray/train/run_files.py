"""A training run's directory, local or ``s3://``, and the slide-level models in it.

```
<run>/run.json                 what was asked: store, labels, tasks, options, the splits
<run>/<part>/                  "single" or "fold-<f>": one model, and Ray Train's checkpoints
<run>/<part>/model/            the best epoch: config.json + model.safetensors (never pickle)
<run>/<part>/history.csv       per-epoch metrics
```

A model's ``config.json`` holds everything needed to use it without the run: the CNN's
config, the tasks (with their classes), the regression targets' scaling, the crop size and the
store configuration it was trained on.
"""

from __future__ import annotations

import io
import json
import os

import fsspec
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pyarrow.fs
import safetensors.torch
import torch

from nic_ray.errors import NicError
from nic_ray.train.nic_cnn import NICNet

MODEL_FORMAT = 1


class RunError(NicError):
    """A run directory that cannot be used as asked."""


def write_parquet(table: pa.Table, url: str) -> None:
    """``table`` to a Parquet file at ``url`` (a local path or any fsspec URL)."""
    with fsspec.open(url, "wb") as f:
        pyarrow.parquet.write_table(table, f)


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


class RunFiles:
    """The files of the run at ``url`` (a local path or any fsspec URL)."""

    def __init__(self, url: str | os.PathLike):
        self.url = str(url).rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root if self.url.startswith(("s3://", "gs://")) else os.path.abspath(root)

    def path(self, *names: str) -> str:
        return "/".join([self.root, *names])

    def exists(self, *names: str) -> bool:
        return self.fs.exists(self.path(*names))

    def write(self, name: str, data: bytes) -> None:
        self.fs.makedirs(self.path(*name.split("/")[:-1]), exist_ok=True)
        self.fs.pipe_file(self.path(name), data)

    def read(self, name: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            raise RunError(f"{self.url}: no {name} (not a nic-ray training run, or not finished)") from None

    def write_json(self, name: str, value: dict) -> None:
        self.write(name, (json.dumps(value, indent=2) + "\n").encode())

    def read_json(self, name: str) -> dict:
        return json.loads(self.read(name))

    def write_csv(self, name: str, rows: list[dict]) -> None:
        buffer = io.BytesIO()
        pyarrow.csv.write_csv(pa.Table.from_pylist(rows), buffer)
        self.write(name, buffer.getvalue())

    def ray_storage(self) -> tuple[str, pyarrow.fs.FileSystem | None]:
        """(storage_path, storage_filesystem) for Ray Train's RunConfig: the run directory itself."""
        if isinstance(self.fs, fsspec.implementations.local.LocalFileSystem):
            return self.root, None
        # Its own instance without a listings cache: Ray lists checkpoints other processes just wrote.
        fs = type(self.fs)(**self.fs.storage_options, skip_instance_cache=True, use_listings_cache=False)
        return self.root, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))

    def save_model(self, part: str, weights: dict[str, torch.Tensor], config: dict) -> None:
        self.write(f"{part}/model/model.safetensors", tensors_to_bytes(weights))
        self.write_json(f"{part}/model/config.json", {"format_version": MODEL_FORMAT, **config})

    def load_model(self, part: str) -> tuple[NICNet, dict]:
        """The part's best model in eval mode, and its config."""
        config = self.read_json(f"{part}/model/config.json")
        if config.get("format_version") != MODEL_FORMAT:
            raise RunError(f"{self.url}/{part}/model: format {config.get('format_version')!r}, expected {MODEL_FORMAT}")
        net = NICNet(**config["model"])
        net.load_state_dict(safetensors.torch.load(self.read(f"{part}/model/model.safetensors")))
        return net.eval(), config

    def parts(self) -> list[str]:
        """The trained parts of the run (one model each)."""
        return [p for p in self.read_json("run.json")["parts"] if self.exists(p, "model", "config.json")]
