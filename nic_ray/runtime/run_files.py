"""A training run's directory, local or any fsspec URL (``s3://``), and the models in it.

```
<run>/run.json                 what was asked (a resumed run must ask the same)
<run>/<part>/checkpoint_*/     Ray Train's checkpoints of one model, named by time
<run>/<part>/model/            a finished model: config.json + model.safetensors (never pickle)
```
"""

from __future__ import annotations

import io
import json
import os

import fsspec
import pyarrow as pa
import pyarrow.csv
import pyarrow.fs
import pyarrow.parquet
import ray.train
import safetensors
import safetensors.torch
import torch

from nic_ray.errors import NicError
from nic_ray.runtime.checkpoint import load_checkpoint, snapshot

MODEL_FORMAT = 1


class RunError(NicError):
    """A run directory that cannot be used as asked."""


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
        """A finished model: its weights and the config that rebuilds it, side by side."""
        self.write(f"{part}/model/model.safetensors", safetensors.torch.save(snapshot(weights)))
        self.write_json(f"{part}/model/config.json", {"format_version": MODEL_FORMAT, **config})

    def read_model(self, part: str) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config, weights) of the part's finished model."""
        config = self.read_json(f"{part}/model/config.json")
        if config.get("format_version") != MODEL_FORMAT:
            raise RunError(f"{self.url}/{part}/model: format {config.get('format_version')!r}, expected {MODEL_FORMAT}")
        return config, safetensors.torch.load(self.read(f"{part}/model/model.safetensors"))

    def latest_checkpoint(self, part: str) -> tuple[dict, dict[str, dict[str, torch.Tensor]]] | None:
        """(state, weights by name) of the part's newest readable checkpoint, or None."""
        if not self.exists(part):
            return None
        self.fs.invalidate_cache()
        names = sorted(
            p for p in self.fs.ls(self.path(part), detail=False) if p.rsplit("/", 1)[-1].startswith("checkpoint_")
        )
        _, filesystem = self.ray_storage()
        for path in reversed(names):  # named by time; one written as its run was killed may be incomplete
            try:
                with ray.train.Checkpoint(path, filesystem=filesystem).as_directory() as directory:
                    return load_checkpoint(directory)
            except (OSError, ValueError, safetensors.SafetensorError):
                continue
        return None

    def parts(self) -> list[str]:
        """The finished parts of the run (one model each)."""
        return [p for p in self.read_json("run.json")["parts"] if self.exists(p, "model", "config.json")]
