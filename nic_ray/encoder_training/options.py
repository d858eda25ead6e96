"""What shapes a trained encoder (`EncoderOptions`): a resumed run must ask for the same."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option


@dataclass
class EncoderOptions:
    """Everything that shapes the encoder; a resumed run must ask for the same."""

    code_size: int = option(128, "code length C")
    width: int = option(128, "encoder filters")
    epochs: int = option(20, "epochs")
    batch_size: int = option(64, "patches per step, all workers together")
    steps_per_epoch: int = option(0, "multitask: steps an epoch; 0: a pass over the largest task")
    lr: float = option(2e-4, "Adam learning rate")
    augment: float = option(1.0, "augmentation strength: 0 none, 1 the paper's ranges")
    gamma: float = option(1.0, "VAE: weight of the KL term")
    mpp: float = option(0.5, "µm/px of the patches")
    patch_size: int = option(128, "patch side in px")
    per_slide: int = option(256, "patches sampled per slide")
    tissue: float = option(0.5, "tissue fraction of a cell to sample it")
    seed: int = option(0, "seed of weights, sampling and augmentation")


@dataclass
class ProbeOptions:
    """How `probe_encoder` measures what frozen codes hold of a patch set's classes."""

    test_fraction: float = option(0.3, "share of the patches held out, stratified")
    seed: int = option(0, "seed of the split and the classifier")
    classifier: str = option(
        "mlp", "on the frozen codes: an MLP of 64 hidden units, or a logistic regression", choices=("mlp", "linear")
    )
