"""The encoder contract: shapes, attributes, determinism, checkpoints, import paths, errors."""

import json

import numpy as np
import pytest
import torch

from nic_ray.encoders import create_encoder, encoder_sha256, load_encoder, save_encoder
from nic_ray.errors import EncoderError

PATCHES = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 128, 128, 3), dtype=np.uint8))


def test_mean_rgb_is_the_mean_colour():
    enc = load_encoder("mean-rgb")
    assert (enc.code_size, enc.patch_size, enc.mpp) == (3, 128, 0.5)
    expected = PATCHES.numpy().astype(np.float64).mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(enc(PATCHES).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("size", [257, 258, 512])  # its row sums fit 16 bits up to 257 rows
def test_mean_rgb_of_white_and_large_patches(size):
    patches = np.random.default_rng(size).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    patches[0] = 255
    expected = patches.astype(np.float64).mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(load_encoder("mean-rgb")(torch.from_numpy(patches)).numpy(), expected, rtol=1e-6)


def test_nic_encoder_architecture():
    enc = load_encoder("nic")
    assert (enc.code_size, enc.patch_size, enc.mpp) == (128, 128, 0.5)
    assert not enc.training
    assert sum(p.numel() for p in enc.parameters()) == 594_944  # the released ~596k
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (2, 2), 128)] * 4
    assert enc.project.in_features == 1152
    with torch.inference_mode():
        assert enc(PATCHES).shape == (6, 128)
    assert load_encoder("nic", code_size=32, patch_size=64)(PATCHES[:, :64, :64]).shape == (6, 32)


def test_same_seed_same_weights():
    a, b, c = create_encoder("nic"), create_encoder("nic"), create_encoder("nic", seed=1)
    assert encoder_sha256(a) == encoder_sha256(b) != encoder_sha256(c)
    with torch.inference_mode():
        assert torch.equal(a.eval()(PATCHES), b.eval()(PATCHES))


def test_checkpoint_round_trip_is_exact(tmp_path):
    enc = create_encoder("nic", code_size=64, seed=3)
    with torch.no_grad():  # give BatchNorm non-default statistics, which must travel too
        for bn in (m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    save_encoder(enc, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["architecture"] == "nic"
    back = load_encoder(tmp_path / "ck")
    assert back.code_size == 64
    for (k, v), (k2, v2) in zip(enc.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with torch.inference_mode():
        assert torch.equal(enc.eval()(PATCHES), back(PATCHES))
    assert encoder_sha256(enc) == encoder_sha256(back)


def test_user_module_by_import_path(tmp_path):
    enc = load_encoder("tests.user_encoder:build")
    assert (enc.code_size, enc.patch_size, enc.mpp) == (3, 64, 1.0)
    np.testing.assert_array_equal(enc(PATCHES).numpy(), PATCHES.numpy().max(axis=(1, 2)))
    save_encoder(enc, tmp_path / "user")
    assert load_encoder(tmp_path / "user").config["architecture"] == "tests.user_encoder:build"


@pytest.mark.parametrize(
    "name,message",
    [
        ("resnet-9000", "unknown encoder 'resnet-9000'"),
        ("tests.user_encoder:missing", "cannot import it"),
        ("no_such_package.mod:f", "cannot import it"),
        ("tests.user_encoder:not_a_module", "not a torch.nn.Module"),
    ],
)
def test_bad_encoder_names(name, message):
    with pytest.raises(EncoderError, match=message) as info:
        load_encoder(name)
    assert "\n" not in str(info.value)


def test_bad_checkpoints(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="not an encoder checkpoint"):
        load_encoder(tmp_path / "empty")
    save_encoder(create_encoder("nic", code_size=16), tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg | {"code_size": 32}))
    with pytest.raises(EncoderError, match="weights do not fit"):
        load_encoder(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(EncoderError, match="bad config.json"):
        load_encoder(tmp_path / "ck")
