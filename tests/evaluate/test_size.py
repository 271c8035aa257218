import pytest
import torch

from edgeopt.core.errors import ArtifactError
from edgeopt.evaluate import human_bytes, size_on_disk, state_dict_size


def test_size_of_file_and_folder(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "manifest.json").write_bytes(b"m" * 20)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "weights.bin").write_bytes(b"w" * 300)
    (tmp_path / "report.json").write_bytes(b"r" * 5000)
    (tmp_path / "report.md").write_bytes(b"r" * 7000)

    assert size_on_disk(tmp_path / "model.onnx") == 1000
    assert size_on_disk(tmp_path) == 1320  # reports excluded, manifest and subfolder counted
    assert size_on_disk(tmp_path, exclude=()) == 13320
    assert size_on_disk(str(tmp_path / "report.json")) == 5000  # a file asked for by name


def test_missing_path(tmp_path):
    with pytest.raises(ArtifactError, match="no such file or folder"):
        size_on_disk(tmp_path / "nope")


def test_state_dict_size():
    assert state_dict_size(torch.nn.Linear(10, 5)) == (50 + 5) * 4
    assert state_dict_size(torch.nn.Linear(10, 5).half()) == (50 + 5) * 2
    # BatchNorm: weight, bias, running mean/var (float32) + num_batches_tracked (int64).
    assert state_dict_size(torch.nn.BatchNorm2d(3)) == 4 * 3 * 4 + 8


def test_tied_weights_counted_once():
    a, b = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert state_dict_size(torch.nn.Sequential(a, b)) == 16 * 4


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1500, "1.50 kB"),
        (1_210_000, "1.21 MB"),
        (999_999, "1.00 MB"),
        (3_000_000_000, "3.00 GB"),
        (5_000_000_000_000, "5000.00 GB"),
    ],
)
def test_human_bytes_is_si(n, text):
    assert human_bytes(n) == text
