"""The targets registry: names, aliases, what each supports, and refusals that list what works."""

import shutil

import pytest

from edgeopt.compile.targets import TARGETS, get_target, precision_family, tvm_string
from edgeopt.core.errors import ConfigError


@pytest.mark.parametrize("alias, name", [
    ("x86", "x86_64"), ("amd64", "x86_64"), ("x86-64-v3", "x86_64-avx2"),
    ("x86-64-v4", "x86_64-avx512"), ("arm64", "aarch64"), ("orin", "jetson-orin"),
    ("rpi4", "rpi4"), ("rpi5", "rpi5"), ("cuda", "cuda"),
])
def test_aliases_resolve(alias, name):
    assert get_target(alias).name == name


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_target("riscv")
    for name in TARGETS:
        assert name in str(err.value)


# ELF e_machine of a shared library: what a target's triple must have produced.
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


def _elf_machine(path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path.name} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


@pytest.mark.parametrize("name, precision", [("rpi4", "fp32"), ("jetson-orin", "fp16")])
def test_a_tvm_target_builds_a_library_for_its_own_cpu(tmp_path, name, precision):
    """The target's triple reaches the compiler: an rpi4 or Jetson artifact is an
    aarch64 library built here on x86_64 (cross-compiled), not a host one, and the
    manifest records the target string the library was built for."""
    pytest.importorskip("tvm", reason="Apache TVM is not installed")
    target = get_target(name)
    if shutil.which(target.cross_compiler or "cc") is None:
        pytest.skip(f"{target.cross_compiler} is not installed ({target.cross_package})")
    import edgeopt
    from edgeopt.testing import tiny_cnn

    art = edgeopt.compile(tiny_cnn(), target=name, backend="tvm", precision=precision,
                          input_shape=[1, 8, 8], out=tmp_path / name)
    assert _elf_machine(art.path / art.manifest["model_file"]) == ELF_MACHINE["aarch64"]
    assert art.manifest["arch"] == target.arch == "aarch64"
    assert art.manifest["device"] == target.device
    assert art.manifest["tvm_target"] == tvm_string(target.tvm)


def test_an_onnxruntime_target_writes_an_onnx_file(tmp_path):
    import onnx

    import edgeopt
    from edgeopt.testing import tiny_cnn

    art = edgeopt.compile(tiny_cnn(), target="x86_64", backend="onnxruntime",
                          input_shape=[1, 8, 8], out=tmp_path / "ort")
    onnx.checker.check_model(str(art.path / art.manifest["model_file"]))
    assert art.manifest["backend"] == "onnxruntime" and art.manifest["target"] == "x86_64"


def test_every_tvm_target_string_parses():
    tvm = pytest.importorskip("tvm", reason="Apache TVM is not installed")
    for t in TARGETS.values():
        if t.tvm:
            assert tvm.target.Target(t.tvm).kind.name == t.tvm["kind"]


def test_supported_combinations_pass():
    get_target("x86_64").check("tvm", "w8a8")
    get_target("x86_64").check("onnxruntime", "w4a8")
    get_target("cuda").check("tvm", "fp16")
    assert precision_family("w8a8") == "lowbit" and precision_family("int8") == "int8"


def test_backend_the_target_lacks_is_refused_with_the_available_ones():
    with pytest.raises(ConfigError, match=r"jetson-orin has no backend 'onnxruntime' "
                                          r"\(available: tvm\)"):
        get_target("jetson-orin").check("onnxruntime", "fp32")


def test_precision_the_backend_lacks_is_refused_with_what_works():
    with pytest.raises(ConfigError) as err:
        get_target("cuda").check("tvm", "int8")
    assert "tvm: fp32, fp16" in str(err.value)
    with pytest.raises(ConfigError, match="x86_64 does not support precision 'fp16'"):
        get_target("x86_64").check("tvm", "fp16")


def test_compile_refuses_before_writing(tmp_path, tiny_cnn):
    import edgeopt

    with pytest.raises(ConfigError, match="available: tvm"):
        edgeopt.compile(tiny_cnn, target="jetson-orin", backend="onnxruntime",
                        input_shape=[1, 8, 8], out=tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        edgeopt.compile(tiny_cnn, backend="tensorrt", input_shape=[1, 8, 8], out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
