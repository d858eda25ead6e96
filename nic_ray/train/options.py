"""What shapes a slide-level model (`TrainOptions`): a resumed run must ask for the same."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option

# An epoch of a small cohort is a few steps (48 slides, batch 16: 3), and early stopping after
# `patience` such epochs ended runs before they learned (issue 24's held-out check: accuracy 0.50
# with 3 steps an epoch, 0.91 with 20); large cohorts have more steps than this anyway.
MIN_STEPS = 20
NIC_STRIDES = (2, 2, 2, 2, 2, 2, 1, 1)  # the paper's 8 layers, for 400-cell crops (nic_cnn.default_strides)


@dataclass
class TrainOptions:
    """Everything that shapes a model; a resumed run must ask for the same."""

    epochs: int = option(50, "most epochs")
    batch_size: int = option(16, "crops per step, all workers together")
    steps_per_epoch: int = option(
        0, f"steps an epoch; 0: the training slides / batch size, at least {MIN_STEPS} (small cohorts learn too)"
    )
    crop_size: int = option(400, "crop side in grid cells")
    width: int = option(128, "CNN filters")
    strides: tuple[int, ...] = option(
        (),
        "CNN layer strides, their count the depth (default: follow --crop-size: the paper's 8 layers at 400, "
        "fewer for smaller crops)",
    )
    dropout: float = option(0.2, "spatial dropout")
    lr: float = option(1e-2, "Adam learning rate")
    min_lr: float = option(1e-4, "floor of the learning rate")
    lr_patience: int = option(4, "epochs without a better validation loss before the learning rate is divided by 3")
    patience: int = option(10, "epochs without a better validation loss before stopping")
    weight_decay: float = option(1e-5, "L2 penalty")
    grid_dihedral: bool = option(True, "a random dihedral transform of each crop")
    balance: str = option("", "task whose classes batches balance (default: the first classification task)")
    val_crops: int = option(4, "crops per validation slide")
    val_views: int = option(1, "dihedral views per validation crop")
    folds: int = option(4, "cross-validation folds without a split or fold column")
    seed: int = option(0, "seed of folds and sampling")


@dataclass
class TestTimeOptions:
    """How a trained model sees a slide: crops at evenly spaced tissue positions × dihedral views."""

    crops: int = option(10, "crops per slide at evenly spaced tissue positions")
    views: int = option(8, "dihedral views of each crop", choices=range(1, 9), metavar="1..8")
    per_patient: bool = option(False, "one row per patient (patient_id column): outputs averaged over its slides")


@dataclass
class EvaluateOptions(TestTimeOptions):
    resamples: int = option(1000, "bootstrap resamples of the 95% intervals")
    seed: int = option(0, "seed of the bootstrap")
