"""The paper's central claim at small scale (TPAMI 2019 §4.2): a CNN on compressed grids combines
local cues (which digit) with global structure (which rectangle is tilted).

Every image holds the same two digit classes in the same amounts: two rectangles of one size, one
of 2s and one of 9s (classes of equal mean ink), in a field of digits of every class at the same
density. Only which of the two is tilted decides the label. An encoder trained on digit classes
(the paper's oracle) compresses the slides; so does mean-RGB, which sees no rectangle at all. The
slide CNN (Ray Train) on the oracle's grids must beat chance and the CNN on mean-RGB grids on
held-out slides.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import PaperCase
from nic_ray.encoder_training.objectives import build_objective
from nic_ray.encoders import create_encoder, save_encoder
from nic_ray.train import evaluate, train

CLASSES = (2, 9)
P = 16  # digit and patch side
SIDE = 320  # px: 20 × 20 cells
DENSITY = 3.5e-3  # digits a px², inside and outside the rectangles alike: about one a cell
LONG = (0.4, 0.5)  # rectangles' long side, a share of SIDE
IMAGES = 320
ROLES = ["train"] * 4 + ["val"] + ["test"] * 3  # 160, 40, 120


def case(seed: int) -> PaperCase:
    label = seed % 2
    return PaperCase(
        SIDE,
        P,
        density=DENSITY,
        long_side=LONG,
        seed=seed,
        label=CLASSES[label],
        distractor=CLASSES[1 - label],
        same_size=True,
    )


def digit_cells(cases: list[PaperCase]) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid cells that hold a digit's centre, and that digit's class."""
    patches, classes = [], []
    for c in cases:
        image, (corners, labels) = c.image(), c.digit_cells()
        patches += [image[y : y + P, x : x + P] for y, x in corners]
        classes += labels.tolist()
    return torch.from_numpy(np.stack(patches)), torch.tensor(classes)


def oracle_encoder(directory) -> str:
    """An encoder trained on digit classes (multitask, one task) on images of its own."""
    torch.manual_seed(0)
    patches, classes = digit_cells([PaperCase(4 * SIDE, P, density=DENSITY, seed=10_000 + s) for s in range(8)])
    encoder = create_encoder("nic", code_size=16, width=32, patch_size=P, mpp=0.5)
    objective = build_objective("multitask", encoder, tasks={"digit": 10})
    optimizers = objective.optimizers(lr=2e-3)
    for _ in range(1500):
        pick = torch.randint(len(classes), (64,))
        objective.step({"digit": {"patch": patches[pick], "label": classes[pick]}}, optimizers, strength=0.0)
    return str(save_encoder(encoder.eval(), directory))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("global-rule")
    (root / "slides").mkdir()
    rows = ["slide_id,label,split"]
    for i in range(IMAGES):
        write_slide(root / "slides" / f"g{i:03d}.tiff", case(i).image(), mpp=0.5, tile=256, downsamples=(1, 4))
        rows.append(f"g{i:03d},{i % 2},{ROLES[i // 2 % len(ROLES)]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_every_image_holds_the_same_classes_in_the_same_amounts():
    for seed in range(4):
        c = case(seed)
        assert {c.label, c.distractor} == set(CLASSES) and c.tilted.angle in (45, 135)
        assert (c.tilted.long, c.tilted.short) == (c.upright.long, c.upright.short)


def test_oracle_grids_learn_the_global_rule_mean_rgb_grids_do_not(slides, tmp_path, ray_session):
    accuracy = {}
    for name, encoder in (("oracle", oracle_encoder(tmp_path / "oracle")), ("mean-rgb", "mean-rgb")):
        store = tmp_path / f"{name}.zarr"
        # Every cell: one that holds only a digit's edge is below any tissue threshold, yet tells its class.
        assert compress(
            [str(slides / "slides")], str(store), encoder=encoder, patch_size=P, tissue_threshold=0.0, progress=False
        ).ok
        run = tmp_path / f"{name}-run"
        train(
            store,
            slides / "labels.csv",
            ["label:binary:label"],
            run,
            crop_size=20,  # the whole grid
            width=32,
            dropout=0.0,
            lr=3e-3,
            steps_per_epoch=25,
            epochs=12,  # the best validation loss comes early, then it overfits; that epoch is kept
            loader_workers=1,
        )
        # One crop: a crop the size of the grid holds all of it wherever it is centred.
        table = evaluate(str(run), str(store), str(slides / "labels.csv"), crops=1, resamples=200).to_pylist()
        metrics = {(r["subset"], r["metric"]): r for r in table}
        accuracy[name] = metrics[("test", "accuracy")]
    oracle, mean_rgb = accuracy["oracle"], accuracy["mean-rgb"]
    assert oracle["slides"] == 120
    assert oracle["low"] > 0.5, accuracy  # its 95% interval clear of chance
    assert oracle["value"] > mean_rgb["value"] + 0.1, accuracy
    print({name: round(a["value"], 3) for name, a in accuracy.items()})
