import json

import pytest
import torch

from edgeopt.core.errors import ConfigError, ModelLoadError
from edgeopt.zoo.cache import reference_weights_path
from edgeopt.zoo.reference import load_reference, train_reference
from edgeopt.zoo.train import TrainConfig, augment, main

TINY = dict(width_mult=0.25, shift=1, hflip=False, batch_size=16)  # digits: no flips


def test_cli_trains_tiny_model_above_chance(tmp_path, capsys):
    out = tmp_path / "r.pt"
    rc = main(
        [
            "--arch",
            "resnet_small",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--limit",
            "800",
            "--batch-size",
            "16",
            "--width-mult",
            "0.25",
            "--shift",
            "1",
            "--no-hflip",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["accuracy"] > 0.3  # chance is 0.1
    assert info["test_samples"] == 359 and info["preprocess"]["mean"] is None
    assert f"{info['accuracy']:.2%}" in capsys.readouterr().out


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["--arch", "resnet_small", "--data", "no-such-dataset", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dataset not found") and "\n" not in err


def test_train_then_load_reference_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="python -m edgeopt.zoo.train"):
        load_reference("mobilenetv2_small", "digits", train_if_missing=False)
    model, accuracy = train_reference(
        "mobilenetv2_small", "digits", epochs=2, limit=1000, threads=1, progress=False, **TINY
    )
    path = reference_weights_path("mobilenetv2_small", "digits")
    assert path == tmp_path / "zoo" / "mobilenetv2_small-digits.pt" and path.is_file()
    assert accuracy > 0.3  # chance is 0.1
    loaded, recorded = load_reference("mobilenetv2_small", "digits", train_if_missing=False)
    assert recorded == accuracy and not loaded.training
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))

    torch.save({"bogus": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match="cannot load reference weights"):
        load_reference("mobilenetv2_small", "digits", train_if_missing=False)


def test_augment_shifts_and_flips():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    assert torch.equal(augment(x, gen, shift=0, hflip=False), x)
    shifted = augment(x, gen, shift=2, hflip=False)
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), torch.ones(64))  # nothing falls off
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # offsets vary per sample
    ramp = torch.arange(9.0).expand(64, 1, 9, 9)
    flipped = augment(ramp, gen, shift=0, hflip=True)
    n_flipped = int((flipped[:, 0, 0, 0] == 8).sum())
    assert 10 < n_flipped < 54 and int((flipped[:, 0, 0, 0] == 0).sum()) == 64 - n_flipped


def test_train_config_validation_and_round_trip():
    config = TrainConfig(arch="resnet_small", optimizer="adamw", epochs=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["optimizer"] == "adamw"
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(arch="resnet_small", epochs=0)
    with pytest.raises(ConfigError, match="unknown architecture"):
        TrainConfig(arch="lenet")
