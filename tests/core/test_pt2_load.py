"""A .pt2 cannot run code in load_model: no unpickling, no eval of its shape expressions."""

import io
import json
import os
import pickle
import zipfile

import pytest
import torch
from torch import nn

from edgeopt.core.errors import ModelLoadError
from edgeopt.core.model import load_model
from edgeopt.core.pt2_load import _safe_expression


class _Payload:
    """Unpickled, it creates the folder ``path``: proof that the file's code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def _exported(dynamic: bool) -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    shapes = {"input": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic else None
    ep = torch.export.export(model, (torch.zeros(2, 4),), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def _rewrite(archive: bytes, edit) -> bytes:
    """``archive`` with ``edit(name, data) -> data`` applied to every member."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for name in src.namelist():
            out.writestr(name, edit(name, src.read(name)))
    return buf.getvalue()


def test_a_pickle_in_place_of_the_sample_inputs_is_refused_unrun(tmp_path):
    """torch.export.load retries failed sample inputs with weights_only=False."""
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(_Payload(str(marker)), protocol=2)
    path = tmp_path / "evil.pt2"
    path.write_bytes(_rewrite(_exported(False), lambda name, data: payload
                              if name.endswith("sample_inputs/model.pt") else data))
    with pytest.raises(ModelLoadError, match=r"evil\.pt2: holds pickled Python objects"):
        load_model(str(path))
    assert not marker.exists()


def test_a_weight_marked_use_pickle_is_refused_unrun(tmp_path):
    """Weights with use_pickle go straight to torch.load(weights_only=False)."""
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(_Payload(str(marker)), protocol=2)

    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        return payload if "/data/weights/weight_" in name else data

    path = tmp_path / "evil.pt2"
    path.write_bytes(_rewrite(_exported(False), edit))
    with pytest.raises(ModelLoadError, match="holds pickled Python objects"):
        load_model(str(path))
    assert not marker.exists()


def test_a_shape_expression_that_is_code_is_refused_unrun(tmp_path):
    """sympy.sympify evaluates each expr_str: it must be arithmetic, not a call to os."""
    marker = tmp_path / "payload-ran"
    code = f"__import__('os').makedirs({str(marker)!r})"
    archive = _exported(True)
    assert b'"expr_str"' in zipfile.ZipFile(io.BytesIO(archive)).read("archive/models/model.json")

    def edit(name, data):
        if not name.endswith("models/model.json"):
            return data
        text = data.decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        return (text[:start] + code.replace("'", "\\u0027") + text[end:]).encode()

    path = tmp_path / "evil.pt2"
    path.write_bytes(_rewrite(archive, edit))
    with pytest.raises(ModelLoadError, match="not arithmetic"):
        load_model(str(path))
    assert not marker.exists()


def test_a_dynamic_batch_pt2_still_loads(tmp_path):
    path = tmp_path / "ok.pt2"
    path.write_bytes(_exported(True))
    handle = load_model(str(path))
    assert handle.input_shape == [4] and handle.batch_range() == (1, 64)
    assert handle.module(torch.zeros(5, 4)).shape == (5, 3)


@pytest.mark.parametrize(("text", "safe"), [
    ("s0", True), ("FloorDiv(s0, 2)", True), ("-s0 + 4", True), ("Eq(s0*2, s1)", True),
    ("Max(1, floor(s0/2))", True), ("Symbol('s31', positive=True, integer=True)", True),
    ("Symbol(__import__('os'))", False), ("Symbol('s0', **{'a': 1})", False),
    ("__import__('os').system('x')", False), ("exit(0)", False), ("input()", False),
    ("s0.__class__", False), ("(lambda: 1)()", False), ("'a'", False), ("s0[0]", False),
])
def test_only_arithmetic_passes_the_expression_check(text, safe):
    assert _safe_expression(text) is safe
