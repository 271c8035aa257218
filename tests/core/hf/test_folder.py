"""core.hf.folder: what an hf:PATH folder holds, and one line for each bad one."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeopt.core.errors import ConfigError, ModelLoadError
from edgeopt.core.hf import is_hf_spec, read_folder


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_reads_sentence_transformers_pooling_and_normalize(tiny_hf):
    f = read_folder(f"hf:{tiny_hf}")
    assert (f.pooling, f.normalize, f.model_type) == ("mean", True, "bert")
    assert f.tokenizer.name == "tokenizer.json"
    assert is_hf_spec(f"hf:{tiny_hf}") and not is_hf_spec(str(tiny_hf))


def test_cls_pooling_without_normalize(tiny_hf, tmp_path):
    d = shutil.copytree(tiny_hf, tmp_path / "m")
    (d / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    modules = [m for m in json.loads((d / "modules.json").read_text())
               if not m["type"].endswith("Normalize")]
    (d / "modules.json").write_text(json.dumps(modules))
    f = read_folder(f"hf:{d}")
    assert (f.pooling, f.normalize) == ("cls", False)


def test_a_folder_that_is_not_a_transformers_model(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ModelLoadError) as exc:
        read_folder(f"hf:{tmp_path}")
    assert _one_line(exc).endswith("not a transformers model folder (no config.json; "
                                   "found weights.npz)")


def test_a_config_without_model_type(tiny_hf, tmp_path):
    d = shutil.copytree(tiny_hf, tmp_path / "m")
    (d / "config.json").write_text('{"hidden_size": 4}')
    with pytest.raises(ModelLoadError) as exc:
        read_folder(f"hf:{d}")
    assert "config.json has no model_type" in _one_line(exc)


def test_a_missing_tokenizer(tiny_hf, tmp_path):
    d = shutil.copytree(tiny_hf, tmp_path / "m")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError) as exc:
        read_folder(f"hf:{d}")
    assert _one_line(exc).startswith(f"hf:{d}: no tokenizer.json")


def test_a_missing_folder_and_an_unknown_task(tmp_path):
    with pytest.raises(ModelLoadError) as exc:
        read_folder(f"hf:{tmp_path / 'nope'}")
    assert "no such folder" in _one_line(exc)
    with pytest.raises(ConfigError, match="unknown task 'detection'"):
        read_folder(f"hf:{tmp_path}", task="detection")
