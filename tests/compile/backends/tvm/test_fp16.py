"""fp16 TVM builds for CUDA targets: the artifact, its half-precision kernels (compiled by
nvcc), the numerics of the same fp16 module on this CPU, and what is refused.

No GPU is needed: the CUDA library is built and inspected, not run."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")

import edgeopt  # noqa: E402
from edgeopt import Int8Config, apply  # noqa: E402
from edgeopt.cli import main  # noqa: E402
from edgeopt.compile.api import prepare  # noqa: E402
from edgeopt.compile.backends.tvm.export import build, relax_module  # noqa: E402
from edgeopt.compile.backends.tvm.fp16 import constant_bytes, cuda_source, nvcc_ptx  # noqa: E402
from edgeopt.compile.backends.tvm.fp16_host import fp16_reference_check  # noqa: E402
from edgeopt.compile.backends.tvm.runtime import set_threads  # noqa: E402
from edgeopt.compile.targets import get_target  # noqa: E402
from edgeopt.core.errors import ConfigError  # noqa: E402

SHAPE = [1, 8, 8]
# A fused convolution kernel whose operands are half: the conversion reached the GPU code.
HALF_CONV = re.compile(r"fused_conv2d\w*_kernel\(half\* __restrict__")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc (CUDA toolkit) is not on PATH")


@pytest.fixture(scope="module")
def model(make_cnn):
    return make_cnn(seed=5, width=8, hidden=32)


@pytest.fixture(scope="module")
def fp16_artifact(model, tmp_path_factory):
    return edgeopt.compile(model, target="cuda", backend="tvm", precision="fp16",
                           input_shape=SHAPE, out=tmp_path_factory.mktemp("tvm") / "fp16")


@pytest.fixture(scope="module")
def modules(model):
    gm, shape = prepare(model, SHAPE)
    return relax_module(gm, shape)[0], relax_module(gm, shape, "fp16")[0]


def test_fp16_cuda_artifact_and_manifest(fp16_artifact):
    m = json.loads((fp16_artifact.path / "manifest.json").read_text())
    assert m["precision"] == "fp16" and m["device"] == "cuda" and m["backend"] == "tvm"
    assert set(m["layer_precision"].values()) == {"fp16"}
    assert len(m["layer_precision"]) == 3  # conv (BN folded), two linears
    # The runtime interface is the fp32 one: casts at the ends of the module.
    assert m["inputs"] == [{"name": "input", "shape": ["N", *SHAPE], "dtype": "float32"}]
    assert m["outputs"][0]["dtype"] == "float32" and m["outputs"][0]["shape"] == ["N", 10]
    assert set(m["files"]) == {"model.so"} and "params_file" not in m
    # TVM keeps the CUDA source in the library (the device compiles it at load).
    assert HALF_CONV.search((fp16_artifact.path / "model.so").read_bytes().decode("latin-1"))


def test_weights_are_stored_as_fp16_constants(modules):
    fp32, fp16 = modules
    assert constant_bytes(fp32) == 4 * (8 * 9 + 8 + 128 * 32 + 32 + 32 * 10 + 10)
    assert constant_bytes(fp16) == constant_bytes(fp32) // 2


def test_cuda_kernels_compute_in_half(modules):
    fp32, fp16 = modules
    source = cuda_source(build(fp16, get_target("cuda")))
    assert HALF_CONV.search(source)
    # The signature stays float32: the first kernel casts the float input to half, the
    # last (matmul, bias, cast) writes float logits from half operands.
    assert re.search(r" cast_kernel\(half\* __restrict__ \w+, float\* __restrict__ x_ptr", source)
    assert re.search(r"matmul\w*_cast\d*_kernel\(float\* __restrict__ \w+, half\*", source)
    assert "half" not in cuda_source(build(fp32, get_target("cuda")))


@needs_nvcc
def test_nvcc_compiles_the_half_kernels(modules):
    ptx = nvcc_ptx(cuda_source(build(modules[1], get_target("jetson-orin"))), "sm_87")
    assert ".target sm_87" in ptx
    # Bias adds and ReLUs in fp16; fp16 operands widened into the fp32 accumulators.
    assert re.search(r"\badd(\.rn)?\.f16", ptx) and "cvt.f32.f16" in ptx


def test_cpu_build_of_the_fp16_module_matches_pytorch(model):
    set_threads(1)
    x = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(0))
    check = fp16_reference_check(model, SHAPE, x)
    assert check.n == 200 and check.agreement >= 0.99
    # A few fp16 ulps of the logits' scale, and not zero: an fp32 build would match
    # PyTorch to ~1e-6, so a conversion that did nothing fails the lower bound.
    assert 1e-5 < check.max_abs_diff <= 5e-3 * check.max_abs_logit


def test_relu6_converts_and_keeps_its_bounds():
    # ReLU6 imports as clip with scalar bounds, which ToMixedPrecision cannot take as is.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU6(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).eval()
    with torch.no_grad():
        model[0].weight.mul_(20)  # drive activations past 6, so the upper bound matters
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model[0](x) > 6).float().mean() > 0.05
    check = fp16_reference_check(model, SHAPE, x)
    assert check.agreement >= 0.98
    assert 1e-5 < check.max_abs_diff <= 5e-3 * check.max_abs_logit


def test_wide_fp16_matmul_builds_for_sm87_without_tensor_cores():
    # DLight's tensor-core rule takes fp16 matmuls wider than 64 for sm_70+, and in
    # TVM 0.27 crashes the process there; export keeps it off (export._no_tensor_cores).
    # The build imports TVM's CUDA tensor-intrinsic library once per process (intrinsics.py:
    # seconds; DLight's own import of it took ~4 minutes under pytest).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 128)).eval()
    gm, shape = prepare(model, SHAPE)
    source = cuda_source(build(relax_module(gm, shape, "fp16")[0], get_target("jetson-orin")))
    assert re.search(r"matmul\w*_kernel\(half\* __restrict__", source) and "wmma" not in source


@pytest.mark.parametrize("target, backend", [
    ("x86_64", "tvm"), ("x86_64", "onnxruntime"), ("rpi4", "tvm"),
])
def test_fp16_is_refused_where_the_registry_does_not_list_it(model, tmp_path, target, backend):
    out = tmp_path / "a"
    with pytest.raises(ConfigError) as err:
        edgeopt.compile(model, target=target, backend=backend, precision="fp16",
                        input_shape=SHAPE, out=out)
    msg = str(err.value)
    assert f"does not support precision 'fp16' with {backend}" in msg and "\n" not in msg
    assert not out.exists()


def test_cli_compiles_fp16_for_cuda_and_refuses_x86(model_factories, tmp_path, capsys):
    spec = f"{model_factories}:tiny_cnn"
    out = tmp_path / "gpu"
    assert main(["compile", spec, "--target", "gpu", "--backend", "tvm", "--precision", "fp16",
                 "--input-shape", "1,8,8", "--out", str(out)]) == 0
    assert "fp16 tvm artifact for cuda" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["precision"] == "fp16"
    rc = main(["compile", spec, "--target", "x86_64", "--backend", "tvm", "--precision", "fp16",
               "--input-shape", "1,8,8", "--out", str(tmp_path / "cpu")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert "x86_64 does not support precision 'fp16'" in err and "tvm: fp32" in err


def test_int8_model_asked_for_fp16_is_refused(tmp_path):
    from edgeopt.testing import tiny_cnn

    calib = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    q = apply(tiny_cnn(), Int8Config(calib_size=64), data=calib, progress=False)
    with pytest.raises(ConfigError, match=r"converts a float model, but this model is int8"):
        edgeopt.compile(q, target="cuda", backend="tvm", precision="fp16", out=tmp_path / "q")
    with pytest.raises(ConfigError, match="this model is int8"):
        fp16_reference_check(q, None, np.zeros((2, *SHAPE), np.float32))
    assert not (tmp_path / "q").exists()
