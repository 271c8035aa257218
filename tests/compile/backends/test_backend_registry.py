"""The backend registry: one list of backends, read by every place that names one."""

from pathlib import Path

import pytest

import edgeopt
from edgeopt.cli.parser import build_parser
from edgeopt.compile.backends import protocol
from edgeopt.compile.backends.protocol import Backend
from edgeopt.compile.backends.registry import BACKENDS, conversions, get_backend, tunable
from edgeopt.compile.targets import TARGETS
from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.recipes import CompileSection

FOLDER = Path(protocol.__file__).parent
# What DESIGN.md's "Backend interface" promises every backend folder holds.
STANDARD_FILES = {"__init__.py", "export.py", "runtime.py", "size.py", "lower.py"}


def test_every_backend_folder_is_registered_and_has_the_standard_files():
    folders = sorted(p.name for p in FOLDER.iterdir() if (p / "__init__.py").is_file())
    assert list(BACKENDS) == folders == ["onnxruntime", "tvm"]
    for name, backend in BACKENDS.items():
        assert isinstance(backend, Backend) and backend.name == name
        assert STANDARD_FILES <= {p.name for p in (FOLDER / name).iterdir()}, name


def test_every_backend_a_target_names_is_registered_and_lists_that_target():
    for t in TARGETS.values():
        for name in t.support:
            assert t.name in get_backend(name).targets()
    assert "cuda" in get_backend("tvm").targets()
    assert "cuda" not in get_backend("onnxruntime").targets()


def test_capabilities_come_from_the_backends():
    assert tunable() == ("tvm",)
    assert conversions() == {"fp16"}


def test_an_unknown_backend_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"^unknown backend 'tflite' \(valid: onnxruntime, "
                                          r"tvm\)$"):
        get_backend("tflite")


def test_cli_recipes_and_compile_read_the_registry(monkeypatch, tmp_path, tiny_cnn):
    # A backend added to the registry is a CLI choice and a valid recipe backend at once.
    monkeypatch.setitem(BACKENDS, "null", protocol.FolderBackend("null", "nothing"))
    args = build_parser().parse_args(["compile", "m.onnx", "--backend", "null", "--out", "o"])
    assert args.backend == "null"
    assert CompileSection(backend="null").backend == "null"
    # ... and compile asks the target table whether the target has it.
    with pytest.raises(ConfigError, match="target x86_64 has no backend 'null'"):
        edgeopt.compile(tiny_cnn, backend="null", input_shape=[1, 8, 8], out=tmp_path / "a")


def test_load_checks_the_artifact_is_the_backends(tmp_path, tiny_cnn):
    art = edgeopt.compile(tiny_cnn, input_shape=[1, 8, 8], out=tmp_path / "a")
    predictor = get_backend("onnxruntime").load(art.path)
    assert predictor.backend == "onnxruntime"
    with pytest.raises(ArtifactError, match="built by backend 'onnxruntime', not 'tvm'"):
        get_backend("tvm").load(art.path)
