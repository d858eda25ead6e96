"""Encoder training parts without Ray: objectives learn, pairs follow the 75/25 rule, patches
match the slide, labelled patch sets read back, augmentation keeps its contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import digit_patches, nic_synthetic_case
from nic_ray.encoder_training.augment import augment
from nic_ray.encoder_training.objectives import build_objective
from nic_ray.encoder_training.objectives.bigan import BiGAN
from nic_ray.encoder_training.patches import (
    PatchSampling,
    PatchSetError,
    load_patch_set,
    make_pairs,
    plan_patches,
    read_patches,
)
from nic_ray.encoders import create_encoder
from nic_ray.encoders.nic import to_input
from nic_ray.errors import NicError
from tests.conftest import openslide_rgb

SMALL = {"code_size": 16, "width": 16}


def small_encoder(seed: int = 0):
    return create_encoder("nic", seed=seed, **SMALL)


def train_steps(objective, batch: dict, steps: int) -> list[float]:
    """The figures of ``steps`` Adam steps on one fixed batch (no augmentation)."""
    torch.manual_seed(0)
    optimizers = objective.optimizers(lr=2e-3)
    return [objective.step(batch, optimizers, strength=0.0) for _ in range(steps)]


@pytest.fixture(scope="module")
def digits():
    patches, labels = digit_patches(32, seed=0)
    return torch.from_numpy(patches), torch.from_numpy(labels)


def early_late(losses: list[dict], key: str = "loss") -> tuple[float, float]:
    return np.mean([x[key] for x in losses[:3]]), np.mean([x[key] for x in losses[-3:]])


def test_vae_loss_falls(digits):
    losses = train_steps(build_objective("vae", small_encoder()), {"patch": digits[0]}, 30)
    early, late = early_late(losses)
    assert late < 0.7 * early


def test_contrastive_loss_falls(digits):
    patches = digits[0]
    pairs = make_pairs(
        {"patch": patches.numpy(), "neighbour": patches.numpy()[::-1].copy(), "slide": np.arange(32) % 4},
        np.random.default_rng(0),
    )
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in pairs.items()}
    early, late = early_late(train_steps(build_objective("contrastive", small_encoder()), batch, 30))
    assert late < 0.5 * early


def test_bigan_trains_and_its_shapes_match(digits):
    objective = build_objective("bigan", small_encoder())
    assert isinstance(objective, BiGAN)
    z = torch.randn(5, 16)
    assert objective.generator(z).shape == (5, 3, 64, 64)  # the pooled patch the encoder sees
    assert objective.encoder(digits[0][:5]).shape == (5, 16)
    assert objective.discriminator(objective.generator(z), z).shape == (5,)
    before = [p.clone() for p in objective.encoder.parameters()]
    d_losses = train_steps(objective, {"patch": digits[0]}, 1)  # generator losses of step 1
    assert all(np.isfinite(v) for v in d_losses[0].values())
    # The discriminator learns to tell pairs apart: its loss falls over steps of its own group.
    d_opt = torch.optim.Adam(objective.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    seen = []
    for _ in range(25):
        out = objective.losses("discriminator", {"patch": digits[0]}, 0.0)
        d_opt.zero_grad()
        out["loss"].backward()
        d_opt.step()
        seen.append(float(out["loss"]))
    assert np.mean(seen[-3:]) < 0.8 * np.mean(seen[:3])
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.encoder.parameters()))  # E trained by G's group


def test_multitask_trains_both_heads(digits):
    patches, labels = digits
    objective = build_objective("multitask", small_encoder(), tasks={"digit": 10, "big": 2})
    heads = {name: head.weight.clone() for name, head in objective.heads.items()}
    batch = {
        "digit": {"patch": patches[:16], "label": labels[:16]},
        "big": {"patch": patches[16:], "label": (labels[16:] >= 5).long()},
    }
    losses = train_steps(objective, batch, 30)
    for task in ("digit", "big"):
        early, late = early_late(losses, f"loss_{task}")
        assert late < 0.5 * early, task
        assert not torch.equal(heads[task], objective.heads[task].weight)


def test_a_non_nic_encoder_is_refused():
    with pytest.raises(NicError, match="mean-rgb.*NIC architecture"):
        build_objective("vae", create_encoder("mean-rgb"))


def test_pairs_follow_the_75_25_rule():
    n = 4000
    patch = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    batch = {"patch": patch, "neighbour": 255 - patch, "slide": np.arange(n) % 7}
    pairs = make_pairs(batch, np.random.default_rng(1))
    kind, same = pairs["kind"], pairs["same"]
    assert abs(same.mean() - 0.5) < 0.03
    different = kind[~same]
    assert abs((different == 1).mean() - 0.75) < 0.03 and abs((different == 2).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(pairs["b"][kind == 0], patch[kind == 0])
    np.testing.assert_array_equal(pairs["b"][kind == 1], 255 - patch[kind == 1])
    for i in np.flatnonzero(kind == 2)[:200]:  # another slide's patch
        j = np.flatnonzero((patch == pairs["b"][i]).all(axis=(1, 2, 3)) & (batch["slide"] != batch["slide"][i]))
        assert len(j)
    one_slide = make_pairs({**batch, "slide": np.zeros(n, int)}, np.random.default_rng(1))
    assert set(np.unique(one_slide["kind"])) == {0, 1}  # no other slide: neighbours stand in


def test_planned_patches_are_tissue_with_adjacent_neighbours(tmp_path):
    case = nic_synthetic_case(size=(1024, 1024), n_digits=300, digit_px=32, seed=2)
    path = write_slide(tmp_path / "d.tiff", case.image, mpp=0.5, tile=256, downsamples=(1, 4))
    sampling = PatchSampling(patch_size=128, per_slide=12, tissue=0.05, seed=0)
    rows = plan_patches({"slide": 3, "url": str(path), "mpp": np.nan}, sampling)
    assert len(rows) == 12 and not any(r["error"] for r in rows)
    assert all(abs(r["y"] - r["ny"]) + abs(r["x"] - r["nx"]) == 1 for r in rows)
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    out = read_patches(batch, sampling)
    for i, r in enumerate(rows):
        expected = openslide_rgb(path, 0, r["x"] * 128, r["y"] * 128, 128, 128)
        np.testing.assert_array_equal(out["patch"][i], expected)
        np.testing.assert_array_equal(
            out["neighbour"][i], openslide_rgb(path, 0, r["nx"] * 128, r["ny"] * 128, 128, 128)
        )
    assert (out["slide"] == 3).all()
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(b"not a slide")
    [row] = plan_patches({"slide": 0, "url": str(bad), "mpp": np.nan}, sampling)
    assert "bad.tiff" in row["error"]


def test_patch_sets_from_folders_and_location_tables(tmp_path):
    patches, labels = digit_patches(6, seed=3)
    for i, (p, y) in enumerate(zip(patches, labels)):
        (tmp_path / "folder" / f"c{y % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(tmp_path / "folder" / f"c{y % 2}" / f"{i}.png")
    got = load_patch_set(tmp_path / "folder")
    assert got.classes == ["c0", "c1"] and len(got.labels) == 6
    for p, y in zip(got.patches, got.labels):  # each image is one of its class's patches
        assert any(np.array_equal(p, q) for q, z in zip(patches, labels) if z % 2 == y)
    image = np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20, np.ones((128, 128, 3), np.uint8))
    slide = write_slide(tmp_path / "s.tiff", image, mpp=0.25, tile=256, downsamples=(1, 2), compression="zlib")
    (tmp_path / "loc.csv").write_text(f"url,x,y,label\n{slide},128,0,a\n{slide},64,64,b\n")
    got = load_patch_set(tmp_path / "loc.csv", mpp=0.5)  # level 1: half of the 0.25 µm/px image
    np.testing.assert_array_equal(got.patches[1], openslide_rgb(slide, 1, 64, 64, 128, 128))
    assert got.labels.tolist() == [0, 1]
    assert got.groups.tolist() == [str(slide)] * 2  # where each came from: probes split by slide
    assert load_patch_set(tmp_path / "folder").groups is None
    (tmp_path / "one.csv").write_text(f"url,x,y,label\n{slide},0,0,a\n")
    with pytest.raises(PatchSetError, match="one.csv: a single class"):
        load_patch_set(tmp_path / "one.csv")
    Image.fromarray(patches[0][:100]).save(tmp_path / "folder" / "c0" / "small.png")
    with pytest.raises(PatchSetError, match="small.png: 128×100 px"):
        load_patch_set(tmp_path / "folder")


def test_augment_keeps_range_shape_and_varies_per_patch():
    x = to_input(torch.from_numpy(digit_patches(8, seed=4)[0]))
    torch.manual_seed(0)
    y = augment(x, 1.0)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.equal(augment(x, 0.0), x)
    repeated = augment(x[:1].repeat(4, 1, 1, 1), 1.0)
    assert len({round(float(r.sum()), 2) for r in repeated}) == 4
    assert (augment(x, 0.2) - x).abs().mean() < (augment(x, 1.0) - x).abs().mean()


@pytest.mark.parametrize("method", ["vae", "contrastive", "bigan", "multitask"])
def test_every_method_trains_an_encoder_of_the_papers_small_patches(method):
    """P = 9 (a digit a patch) and C = 16, the paper's synthetic setting: the NIC architecture
    keeps its shape (no 128-px assumptions) and every objective takes a step on such patches."""
    from nic_ray.datasets.synthetic_task import PaperCase

    encoder = create_encoder("nic", patch_size=9, code_size=16, width=16)
    sides = [m.stride[0] for m in encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert sides == [2, 1, 1, 1] and encoder.project.in_features == 16 * 4 * 4  # 9 → 4, then kept
    image = PaperCase(size=90, seed=4).image()
    patches = torch.from_numpy(np.ascontiguousarray(image.reshape(10, 9, 10, 9, 3).transpose(0, 2, 1, 3, 4)))
    patches = patches.reshape(100, 9, 9, 3)[:16]
    assert encoder(patches).shape == (16, 16)
    extra = {"tasks": {"digit": 10}} if method == "multitask" else {}
    objective = build_objective(method, encoder, **extra)
    optimizers = objective.optimizers(lr=1e-3)
    if method == "contrastive":
        batch = {"a": patches, "b": patches.flip(0), "same": torch.arange(16) % 2}
    elif method == "multitask":
        batch = {"digit": {"patch": patches, "label": torch.arange(16) % 10}}
    else:
        batch = {"patch": patches}
    figures = objective.step(batch, optimizers, strength=0.5)
    assert figures and all(np.isfinite(v) for v in figures.values())
