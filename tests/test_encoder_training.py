"""Encoder training end to end on Ray Train: from slides (VAE, contrastive, BiGAN) and patch sets
(multitask), checkpoints, a killed worker, the encoder used by compress, and the probe (NIC Table 1)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from nic_ray.compress import compress
from nic_ray.datasets.synthetic import write_slide
from nic_ray.datasets.synthetic_task import digit_mosaic, digit_patches
from nic_ray.encoder_training.patches import PatchSet
from nic_ray.encoder_training.probe import probe_encoder
from nic_ray.encoder_training.trainer import train_encoder
from nic_ray.encoders import create_encoder, encoder_sha256, load_encoder
from nic_ray.errors import NicError
from nic_ray.runtime.run_files import RunError
from nic_ray.store import Store
from tests.conftest import openslide_rgb, train_workers, wait_for_checkpoints

TINY = {"code_size": 16, "width": 16, "batch_size": 16, "per_slide": 24, "tissue": 0.05, "loader_workers": 1}

# Big enough that each method learns something about digits in about a minute (benchmarks/encoders.py).
# Margins over the baselines in 2–6 runs each: at lr 1e-3 contrastive 0.04–0.08 and BiGAN 0.09–0.15
# (which once failed CI); at 2e-3 VAE 0.31–0.34, contrastive 0.13–0.18, BiGAN 0.11–0.25.
SMALL = {
    **TINY,
    "code_size": 32,
    "width": 32,
    "batch_size": 32,
    "per_slide": 96,
    "tissue": 0.1,
    "lr": 2e-3,
    "augment": 0.5,
}


@pytest.fixture(scope="module")
def slides(tmp_path_factory, ray_session):
    """Four slides of digit texture (2048², 0.5 µm/px), and a file that is not a slide."""
    root = tmp_path_factory.mktemp("encoder-slides")
    for i in range(4):
        write_slide(root / f"d{i}.tiff", digit_mosaic(16, seed=100 + i), mpp=0.5, tile=256, downsamples=(1, 4))
    (root / "broken.tiff").write_bytes(b"II*\x00 truncated")
    return root


@pytest.fixture(scope="module")
def probe_set() -> PatchSet:
    return PatchSet(*digit_patches(2000, seed=7), [str(c) for c in range(10)])


@pytest.fixture(scope="module")
def baseline_accuracy(probe_set) -> float:
    """The better MLP probe of mean-RGB and of a random encoder of the trained ones' architecture."""
    random = create_encoder("nic", seed=0, code_size=SMALL["code_size"], width=SMALL["width"])
    return max(probe_encoder(e, probe_set, classifier="mlp")["accuracy"] for e in ("mean-rgb", random))


@pytest.mark.parametrize("method", ["vae", "contrastive", "bigan"])
def test_methods_train_from_slides_and_beat_the_baselines(
    method, slides, probe_set, baseline_accuracy, tmp_path, s3_endpoint
):
    run = tmp_path / method
    source = str(slides)
    if method == "contrastive":  # slides on an S3 endpoint
        for path in slides.iterdir():
            s3_endpoint.upload_file(str(path), "slides", f"encoder-slides/{path.name}")
        source = "s3://slides/encoder-slides/"
    result = train_encoder(method, str(run), slides=[source], epochs=5, **SMALL)
    assert list(result.left_out) == ["broken"] and "broken.tiff" in result.left_out["broken"]
    assert [h["epoch"] for h in result.history] == list(range(1, 6))
    assert all(np.isfinite(v) for h in result.history for k, v in h.items() if "loss" in k)
    assert result.history[0]["steps"] == 4 * 96 // 32  # every planned patch once an epoch
    encoder = load_encoder(result.encoder)
    assert encoder.code_size == 32 and (run / "history.csv").exists()
    # NIC Table 1: the frozen codes tell digit classes apart better than mean-RGB and random weights.
    trained = probe_encoder(encoder, probe_set, classifier="mlp")["accuracy"]
    assert trained > baseline_accuracy + 0.05, (trained, baseline_accuracy)
    if method != "vae":
        return
    # The checkpoint compresses, its identity is recorded, and codes equal the encoder run directly.
    store = tmp_path / "store.zarr"
    assert compress([str(slides / "d0.tiff")], str(store), encoder=result.encoder, progress=False).ok
    opened = Store.open(store)
    assert opened.config.encoder["sha256"] == encoder_sha256(encoder)
    tissue = opened.read_tissue("d0")
    y, x = np.argwhere(tissue >= 26)[0]
    with torch.inference_mode():
        direct = encoder(torch.from_numpy(openslide_rgb(slides / "d0.tiff", 0, x * 128, y * 128, 128, 128)[None]))
    np.testing.assert_allclose(opened.read_embeddings("d0")[0, :, y, x], direct[0].numpy(), rtol=1e-2, atol=1e-2)
    # Run again: nothing to do; other options on the same run are refused.
    assert train_encoder(method, str(run), slides=[str(slides)], epochs=5, **SMALL).history == result.history
    with pytest.raises(RunError, match="other data or options"):
        train_encoder(method, str(run), slides=[str(slides)], epochs=6, **SMALL)


def write_folder(root, patches, labels) -> str:
    for i, (p, y) in enumerate(zip(patches, labels)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(root / str(y) / f"{i}.png")
    return str(root)


def test_multitask_with_tasks_of_unequal_size(tmp_path, ray_session):
    digits = write_folder(tmp_path / "digits", *digit_patches(60, seed=5))
    patches, labels = digit_patches(20, seed=6)
    parity = write_folder(tmp_path / "parity", patches, labels % 2)
    result = train_encoder(
        "multitask", str(tmp_path / "run"), tasks={"digit": digits, "parity": parity}, epochs=3, **TINY
    )
    first, last = result.history[0], result.history[-1]
    assert first["steps"] == 8  # a pass over the largest task (60), 8 patches of each task a step
    for task in ("digit", "parity"):
        assert last[f"loss_{task}"] < first[f"loss_{task}"], task
    with pytest.raises(NicError, match="multitask trains on --task"):
        train_encoder("multitask", str(tmp_path / "other"), slides=[digits])


def test_a_killed_worker_resumes_from_the_last_checkpoint(slides, tmp_path):
    run = tmp_path / "run"
    done: dict = {}
    thread = threading.Thread(
        target=lambda: done.update(
            result=train_encoder("vae", str(run), slides=[str(slides)], epochs=4, workers=2, max_failures=2, **TINY)
        )
    )
    thread.start()
    wait_for_checkpoints(run, 2, part="train")
    victims = train_workers()
    assert len(victims) == 2
    victims[1].kill()
    thread.join(timeout=300)
    assert "result" in done, "training did not finish after a worker was killed"
    history = done["result"].history
    assert [h["epoch"] for h in history] == list(range(1, 5))  # every epoch once: resumed, not restarted
    assert history[0]["starts"] == 1 and history[-1]["starts"] == 2


def test_probe_ranks_a_supervised_encoder_above_mean_rgb_and_random(
    probe_set, baseline_accuracy, tmp_path, ray_session
):
    train_set = write_folder(tmp_path / "digits", *digit_patches(1000, seed=8))
    # Unaugmented: the probe's patches are drawn as the training ones are (benchmarks/encoders.py).
    result = train_encoder(
        "multitask", str(tmp_path / "run"), tasks={"digit": train_set}, epochs=10, **{**SMALL, "augment": 0.0}
    )
    trained = probe_encoder(result.encoder, probe_set, classifier="mlp")
    # The upper reference: well above what the unsupervised methods reach (+0.05 or more).
    assert trained["accuracy"] > baseline_accuracy + 0.4, (trained, baseline_accuracy)
    assert probe_encoder(result.encoder, probe_set, classifier="linear")["accuracy"] > baseline_accuracy
