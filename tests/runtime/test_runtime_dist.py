"""edgeopt-runtime (runtime/) on its own: a fresh venv with only numpy, onnxruntime and the
runtime distribution loads and runs an int8 ResNet artifact and an int8 text artifact
(tokenized there with `tokenizers`) without torch, onnx or the
compression code, imports in under 0.5 s and is under 20% of the full venv on disk.

The venv is made once (~30 s, pip's cache) and kept in ~/.cache/edgeopt/runtime-venv,
keyed by the runtime's files and pins (bench/runtime_footprint.py). Skips, saying why, only
when a venv or pip cannot run here.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import edgeopt.runtime  # noqa: E402
from bench import runtime_footprint as fp  # noqa: E402
from edgeopt.version import __version__  # noqa: E402

MAX_IMPORT_S = 0.5
MAX_SHARE = 0.20
NEVER_LOADED = {"torch", "onnx", "onnxslim", "tensorly", "edgeopt.compress", "edgeopt.compile.api"}


@pytest.fixture(scope="module")
def runtime_venv():
    try:
        return fp.runtime_venv()
    except fp.VenvUnavailable as exc:
        pytest.skip(f"no runtime venv here: {exc}")


@pytest.fixture(scope="module")
def int8_resnet(tmp_path_factory):
    return fp.build_artifact(tmp_path_factory.mktemp("dist"), width=8)


def test_an_int8_resnet_runs_without_torch_onnx_or_compression_code(runtime_venv, int8_resnet,
                                                                    tmp_path):
    artifact, x_path = int8_resnet
    run = fp.run_artifact(fp.venv_python(runtime_venv), artifact, x_path, tmp_path / "y.npy",
                          isolated=True)
    assert Path(run["file"]).is_relative_to(runtime_venv)  # the installed copy, not the checkout
    assert run["predictor"] == "OrtPredictor"
    assert NEVER_LOADED & set(run["modules"]) == set()
    want = edgeopt.runtime.load(artifact).run(np.load(x_path))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=0, atol=1e-6)


def test_a_tampered_artifact_is_refused_in_the_runtime_venv(runtime_venv, int8_resnet, tmp_path):
    artifact, x_path = int8_resnet
    bad = shutil.copytree(artifact, tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    model = bad / manifest["model_file"]
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="does not match its manifest checksum"):
        fp.run_artifact(fp.venv_python(runtime_venv), bad, x_path, tmp_path / "y.npy",
                        isolated=True)


def test_a_text_artifact_runs_in_the_runtime_venv(runtime_venv, tmp_path):
    pytest.importorskip("transformers", reason="building a text artifact needs the text extra")
    artifact, texts = fp.build_text_artifact(tmp_path / "text")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and "text" in manifest
    run = fp.run_artifact(fp.venv_python(runtime_venv), artifact, texts, tmp_path / "e.npy",
                          isolated=True)
    assert Path(run["file"]).is_relative_to(runtime_venv)
    assert "tokenizers" in run["modules"]  # tokenized on the "device", by the library alone
    assert NEVER_LOADED & set(run["modules"]) == set()
    assert not {"transformers", "sentence_transformers"} & set(run["modules"])
    got = np.load(tmp_path / "e.npy")
    want = edgeopt.runtime.load(artifact).predict(json.loads(texts.read_text()))
    assert got.shape == (len(fp.TEXTS), 32)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)  # normalised


def test_import_edgeopt_runtime_takes_under_half_a_second(runtime_venv):
    times = fp.import_seconds(fp.venv_python(runtime_venv), isolated=True, repeats=10)
    assert statistics.median(times) < MAX_IMPORT_S, times


def test_the_runtime_venv_is_under_a_fifth_of_the_full_one(runtime_venv):
    runtime, full = fp.tree_bytes(runtime_venv), fp.tree_bytes(Path(sys.prefix))
    assert runtime < MAX_SHARE * full, (runtime, full)


def test_the_two_wheels_share_no_file_and_together_hold_every_module(tmp_path):
    """The full wheel leaves out what edgeopt-runtime installs (setup.py), depends on the
    same version of it, and nothing of edgeopt's is in neither."""
    pytest.importorskip("setuptools", reason="building the full wheel needs setuptools")
    # Built from a copy: setuptools stages build/ and an egg-info in the source folder.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("edgeopt", "runtime"):
        shutil.copytree(fp.REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(fp.REPO / name, src / name)
    fp._run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "--wheel-dir", tmp_path, src], "pip wheel of edgeopt")
    fp._run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "--wheel-dir", tmp_path, src / "runtime"],
            "pip wheel of edgeopt-runtime")
    full = zipfile.ZipFile(next(tmp_path.glob("edgeopt-*.whl")))
    runtime = zipfile.ZipFile(next(tmp_path.glob("edgeopt_runtime-*.whl")))
    names = {n for n in runtime.namelist() if n.startswith("edgeopt/")}
    assert names == set(fp._backend().runtime_files())
    full_names = {n for n in full.namelist() if n.startswith("edgeopt/")}
    assert names & full_names == set()
    in_repo = {p.relative_to(fp.REPO).as_posix() for p in (fp.REPO / "edgeopt").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert in_repo <= names | full_names
    assert "edgeopt/__init__.py" in full_names and "edgeopt/__init__.py" not in names
    metadata = full.read(next(n for n in full.namelist() if n.endswith("METADATA"))).decode()
    assert f"Requires-Dist: edgeopt-runtime=={__version__}" in metadata
    assert f"edgeopt_runtime-{__version__}-py3-none-any.whl" in runtime.filename
