"""`pip install edgeopt` without extras: a step that needs one (tensorly, torch-pruning, TVM)
says which, in one line; everything else runs. Missing modules are simulated with
``sys.modules[name] = None`` (what Python does for a module it must not import)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeopt.compress.lowrank import tucker
from edgeopt.compress.prune import _tp
from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.core.extras import LazyModule, require
from edgeopt.runtime import load

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("tensorly", "torch_pruning", "tvm", "onnx2torch")  # none is a base dependency


def _block(monkeypatch, *names):
    """As if not installed, even where an earlier test has imported them."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_in_one_line(monkeypatch):
    _block(monkeypatch, "tensorly", "tensorly.decomposition")
    with pytest.raises(ConfigError) as exc:
        require("tensorly.decomposition", extra="compress", feature="low-rank factorisation")
    assert str(exc.value) == ("low-rank factorisation needs tensorly, which is not installed: "
                              "install edgeopt[compress] (pip install 'edgeopt[compress]')")


def test_require_keeps_what_an_installed_extra_lacks_a_bug(monkeypatch, tmp_path):
    (tmp_path / "extra_pkg").mkdir()
    (tmp_path / "extra_pkg" / "__init__.py").write_text("import extra_pkg_missing_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="extra_pkg_missing_dep"):
        require("extra_pkg", extra="compress", feature="x")
    lazy = LazyModule("json", extra="none", feature="x")
    assert lazy.dumps([1]) == json.dumps([1])


def test_lowrank_without_tensorly(monkeypatch):
    for lazy in (tucker.tl, tucker.decomposition):
        monkeypatch.setattr(lazy, "_module", None)
    _block(monkeypatch, "tensorly", "tensorly.decomposition")
    with pytest.raises(ConfigError, match=r"install edgeopt\[compress\]"):
        tucker.tucker2(nn.Conv2d(4, 4, 3), 2, 2)


def test_structured_pruning_without_torch_pruning(monkeypatch):
    monkeypatch.setattr(_tp.tp, "_module", None)
    _block(monkeypatch, "torch_pruning")
    with pytest.raises(ConfigError, match=r"structured pruning needs torch_pruning.*"
                                          r"install edgeopt\[compress\]"):
        _tp.count(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.zeros(1, 1, 8, 8))


def test_a_tvm_artifact_without_tvm_names_the_runtime_extra(monkeypatch, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "backend": "tvm", "files": {}, "inputs": []}))
    monkeypatch.setitem(sys.modules, "tvm", None)
    monkeypatch.delitem(sys.modules, "edgeopt.compile.backends.tvm.runtime", raising=False)
    with pytest.raises(ArtifactError, match=r"runtime tvm is not installed: install "
                                            r"edgeopt-runtime\[tvm\]"):
        load(tmp_path)


CLI = """
import sys
for name in {extras!r}:
    sys.modules[name] = None
from edgeopt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI.format(extras=EXTRAS), *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "HOME": str(Path.home())})


MODEL = ["edgeopt.zoo.resnet:resnet_small", "--data", "digits", "--eval-limit", "32",
         "--batch", "8", "--no-progress", "--force"]


def test_optimize_int8_and_the_runtime_need_no_extra(tmp_path):
    proc = _cli(["optimize", *MODEL, "--calib-size", "32", "--recipe", "int8", "--out", str(tmp_path / "art")],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["precision"] == "int8"


@pytest.mark.parametrize("recipe", ["lowrank", "prune-distill"])
def test_a_step_that_needs_an_extra_says_which_in_one_line(recipe, tmp_path):
    proc = _cli(["optimize", *MODEL, "--recipe", recipe, "--out", str(tmp_path / "art")],
                tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]  # progress lines aside
    assert len(errors) == 1 and errors[0].startswith("edgeopt optimize: error: ")
    assert errors[0].endswith("install edgeopt[compress] (pip install 'edgeopt[compress]')")
