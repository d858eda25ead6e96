"""What a synthetic data set is made of (`SyntheticOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from nic_ray.options import option


@dataclass
class SyntheticOptions:
    """The paper's synthetic task (§4.1.1) as a data set: images, their size, and their roles."""

    images: int = option(100, "how many images (slides)")
    size: int = option(3600, "image side in px (the paper: 3600)")
    digit_px: int = option(9, "digit side in px (the paper: 9; a patch of the same size holds one)")
    mpp: float = option(0.5, "µm/px written into the slides")
    long_side_min: float = option(0.01, "shortest long side of a rectangle, a share of the image side")
    long_side_max: float = option(0.5, "longest long side of a rectangle, a share of the image side")
    encoder_share: float = option(0.05, "share of the images for training encoders (the paper: 2,500 of 50,000)")
    test_share: float = option(0.5, "share of the images for the independent test (the paper: half)")
    val_share: float = option(0.25, "share of the CNN's images for validation (the paper: 75/25)")
    format: str = option("tiff", "slide files: pyramidal TIFF, or Aperio-like SVS", choices=("tiff", "svs"))
    seed: int = option(0, "seed of every image and of the roles")
