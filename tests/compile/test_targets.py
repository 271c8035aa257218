"""The targets registry: names, aliases, what each supports, and refusals that list what works."""

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


def test_tvm_targets_carry_cpu_and_triple():
    assert get_target("rpi4").tvm == {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                      "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert get_target("rpi5").tvm["mcpu"] == "cortex-a76"
    orin = get_target("jetson-orin")
    assert orin.tvm["arch"] == "sm_87" and orin.tvm["host"]["mtriple"] == "aarch64-linux-gnu"
    assert tvm_string(get_target("x86_64-avx512").tvm) == (
        "llvm -mtriple=x86_64-linux-gnu -mcpu=x86-64-v4")
    assert get_target("x86_64-avx512").vector_bits == 512


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
