"""One Ray Train runtime for every model nic-ray trains: where it runs, run directories and
their resume guard, the trainer, and per-epoch checkpoints (safetensors and JSON, no pickle)."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Resources": "nic_ray.runtime.resources",
        **dict.fromkeys(["RunError", "RunFiles"], "nic_ray.runtime.run_files"),
    },
)
