"""`write_synthetic_set`: the paper's synthetic task written as a data set of slides.

```
<out>/slides/syn-00000.tiff    pyramidal slides (µm/px, 256-px JPEG tiles, levels 1, 4, 16)
<out>/masks/syn-00000.png      the lesion (the tilted rectangle) at level 0
<out>/cells/syn-00000.png      the truth a cell of ``digit_px`` holds: 1 + the class of the digit
                               centred in it, 0 for none (what a perfect encoder would read)
<out>/labels.csv               slide_id, label, split (train/val/test), distractor, long_side,
                               lesion_share: the CNN's images and the independent test
<out>/encoders.csv             url, slide_id: the images for training encoders (a manifest)
<out>/digits.csv               url, x, y, label: digit cells of the encoder images (a patch table)
```

Roles as in the paper (encoders, CNN training and validation, independent test), each with its
classes balanced. ``digits.csv`` is what the paper's oracle encoder learns from: grid cells of
``digit_px`` (at the slides' µm/px) that hold a digit's centre, labelled with its class, up to
500 an image (`load_patch_set` reads it; ``train_encoder("multitask", tasks={"digit": ...})``).
Slides are painted tile by tile; a slide already written is kept, so a run that stopped goes on
where it was.

Example::

    write_synthetic_set("synthetic/", images=40, size=1800)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from nic_ray.datasets.options import SyntheticOptions
from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import PaperCase
from nic_ray.errors import NicError
from nic_ray.options import split_options

ROLES = ("encoder", "train", "val", "test")
DIGITS_PER_IMAGE = 500


def assign_roles(n: int, options: SyntheticOptions) -> list[str]:
    """A role for each of ``n`` images, in the shares asked, shuffled by the seed.

    >>> roles = assign_roles(40, SyntheticOptions(encoder_share=0.1, test_share=0.5, val_share=0.25))
    >>> [roles.count(r) for r in ("encoder", "train", "val", "test")]
    [4, 12, 4, 20]
    """
    encoder = round(n * options.encoder_share)
    test = round(n * options.test_share)
    val = round((n - encoder - test) * options.val_share)
    roles = ["encoder"] * encoder + ["val"] * val + ["test"] * test
    roles += ["train"] * (n - len(roles))
    return [roles[i] for i in np.random.default_rng(options.seed).permutation(n)]


def write_synthetic_set(out: str | os.PathLike, **options) -> dict[str, int]:
    """Write the data set into ``out`` (see the module); ``options`` are `SyntheticOptions`.
    Returns how many images each role got."""
    (opts,) = split_options(options, SyntheticOptions)
    if opts.images < 1 or opts.size < 4 * opts.digit_px:
        raise NicError(f"--images {opts.images} --size {opts.size}: at least one image of 4 digits a side")
    if not 0 < opts.long_side_min <= opts.long_side_max < 1:
        raise NicError(
            f"--long-side-min {opts.long_side_min} and --long-side-max {opts.long_side_max}: "
            "need 0 < min ≤ max < 1 (shares of the image side)"
        )
    if min(opts.encoder_share, opts.test_share, opts.val_share) < 0 or opts.encoder_share + opts.test_share > 1:
        raise NicError(
            "--encoder-share, --test-share and --val-share are shares from 0 to 1, and the first two "
            "must leave images for the CNN"
        )
    out = Path(out)
    for folder in ("slides", "masks", "cells"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    roles = assign_roles(opts.images, opts)
    seen = dict.fromkeys(ROLES, 0)
    rows, encoders, digits = [], [], []
    for i, role in enumerate(roles):
        slide_id = f"syn-{i:05d}"
        label = seen[role] % 10  # classes balanced within each role
        seen[role] += 1
        case = PaperCase(
            opts.size,
            opts.digit_px,
            long_side=(opts.long_side_min, opts.long_side_max),
            seed=opts.seed * 1_000_003 + i,
            label=label,
        )
        path = out / "slides" / f"{slide_id}.{opts.format}"
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            write_slide(partial, case, opts.mpp, format=opts.format, downsamples=(1, 4, 16))
            partial.rename(path)
        mask = case.mask()
        if not (out / "masks" / f"{slide_id}.png").exists():
            Image.fromarray(mask).save(out / "masks" / f"{slide_id}.png")
        if not (out / "cells" / f"{slide_id}.png").exists():
            Image.fromarray(case.cell_classes()).save(out / "cells" / f"{slide_id}.png")
        if role == "encoder":
            encoders.append({"url": str(path.resolve()), "slide_id": slide_id})
            digits += _digit_cells(case, str(path.resolve()), np.random.default_rng(i))
        else:
            rows.append(
                {
                    "slide_id": slide_id,
                    "label": label,
                    "split": role,
                    "distractor": case.distractor,
                    "long_side": round(case.tilted.long, 1),
                    "lesion_share": round(float(mask.mean()), 5),
                }
            )
    for name, table in (("labels.csv", rows), ("encoders.csv", encoders), ("digits.csv", digits)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["url"])
            writer.writeheader()
            writer.writerows(table)
    return seen


def _digit_cells(case: PaperCase, url: str, rng: np.random.Generator) -> list[dict]:
    corners, classes = case.digit_cells()
    picked = rng.choice(len(classes), min(DIGITS_PER_IMAGE, len(classes)), replace=False)
    return [{"url": url, "x": int(corners[i, 1]), "y": int(corners[i, 0]), "label": int(classes[i])} for i in picked]
