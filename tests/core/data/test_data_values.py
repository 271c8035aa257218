"""NaN/Inf and constant samples in an .npz are refused with one line naming file and array."""

import numpy as np
import pytest

from edgeopt.core.data import load_dataset
from edgeopt.core.data import npz as npz_mod
from edgeopt.core.errors import DataError


def _save(tmp_path, x):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(len(x)) % 2)
    return path


def _images(n=10):
    return np.random.default_rng(0).random((n, 1, 4, 4)).astype(np.float32)


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_refused(tmp_path, bad, word):
    x = _images()
    x[3, 0, 1, 2] = bad
    path = _save(tmp_path, x)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert "\n" not in msg and f"{path}:x" in msg and word in msg


def test_constant_refused(tmp_path):
    path = _save(tmp_path, np.full((10, 1, 4, 4), 7, np.uint8))
    with pytest.raises(DataError, match="constant"):
        load_dataset(str(path))


def test_large_arrays_sampled_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(npz_mod, "SAMPLE_LIMIT", 16)
    x = np.full((10, 1, 4, 4), np.nan, np.float32)
    with pytest.raises(DataError, match="sample of"):
        load_dataset(str(_save(tmp_path, x)))


def test_good_data_passes(tmp_path):
    ds = load_dataset(str(_save(tmp_path, _images())))
    assert len(ds.train) + len(ds.test) == 10


def test_optimize_refuses_nan_npz(tmp_path, capsys):
    """The issue's reproduction: an .npz of NaN images through `optimize` exited 0."""
    from edgeopt.cli import main

    x = np.full((20, 1, 8, 8), np.nan, np.float32)
    path = _save(tmp_path, x)
    out = tmp_path / "art"
    rc = main(["optimize", "edgeopt.zoo.resnet:resnet_small", "--data", str(path),
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and not out.exists()
    assert len(err.splitlines()) == 1 and "NaN" in err and f"{path}:x" in err


def test_optimize_refuses_labels_beyond_model_outputs(tmp_path, capsys):
    """resnet_small outputs 10 classes: a label 12 cannot be predicted."""
    from edgeopt.cli import main

    rng = np.random.default_rng(0)
    path = tmp_path / "wide.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8),
             y_train=np.arange(20) % 13, x_test=rng.integers(0, 256, (8, 1, 8, 8), dtype=np.uint8),
             y_test=np.arange(8) % 10)
    out = tmp_path / "art"
    rc = main(["optimize", "edgeopt.zoo.resnet:resnet_small", "--data", str(path),
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and not out.exists()
    assert len(err.splitlines()) == 1 and f"{path}:y_train" in err and "10 classes" in err
