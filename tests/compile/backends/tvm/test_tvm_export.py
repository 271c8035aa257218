"""TVM artifacts: fp32 logits match PyTorch, int8 agrees with the simulation, bad input is refused."""

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")

import edgeopt  # noqa: E402
from edgeopt import Int8Config, QuantSpec, apply  # noqa: E402
from edgeopt.compress.quantize.spec import QuantConfig  # noqa: E402
from edgeopt.core.errors import ArtifactError, ExportError  # noqa: E402
from edgeopt.runtime import load  # noqa: E402
from edgeopt.zoo import build  # noqa: E402

REF_SHAPE = [1, 28, 28]


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Variance-preserving weights and random BN statistics: with the fresh init the
    logits barely depend on the input (mobilenetv2_small's vary by ~1e-6), and a
    comparison of near-constant outputs would prove little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def reference_artifacts(tmp_path_factory):
    out = {}
    for arch in ("resnet_small", "mobilenetv2_small"):
        torch.manual_seed(0)
        model = _randomize(build(arch), 1)
        art = edgeopt.compile(model, target="x86_64", backend="tvm", input_shape=REF_SHAPE,
                              out=tmp_path_factory.mktemp("tvm") / arch)
        out[arch] = (model, art)
    return out


@pytest.mark.parametrize("arch", ["resnet_small", "mobilenetv2_small"])
@pytest.mark.parametrize("batch", [1, 5])
def test_reference_architectures_match_pytorch(reference_artifacts, arch, batch):
    model, art = reference_artifacts[arch]
    x = torch.randn(batch, *REF_SHAPE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    got = load(art.path, threads=1).run(x.numpy())
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4
    if batch > 1:  # the logits must depend on the input for the match to mean anything
        assert ref.std(0).max() > 1e-3


def test_manifest_and_files(reference_artifacts):
    _, art = reference_artifacts["resnet_small"]
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["backend"] == "tvm" and m["precision"] == "fp32"
    assert m["tvm_target"] == "llvm -mtriple=x86_64-linux-gnu -mcpu=x86-64"
    # The portable library plus the AVX2 and AVX-512 ones the runtime may pick instead
    # (test_tvm_dispatch.py).
    assert set(m["files"]) == {"model.so", "model-avx2.so", "model-avx512.so"}
    assert m["inputs"][0]["shape"] == ["N", *REF_SHAPE]
    assert m["outputs"][0]["shape"] == ["N", 10]
    assert "params_file" not in m  # fp32 weights are compiled into the library


def test_tampered_library_is_refused(reference_artifacts, tmp_path):
    import shutil

    _, art = reference_artifacts["mobilenetv2_small"]
    copy = shutil.copytree(art.path, tmp_path / "copy")
    with open(copy / "model.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="checksum"):
        load(copy)


def test_tiny_cnn_fp32_and_threads(make_cnn, tmp_path):
    model = make_cnn(seed=3, hidden=16)
    art = edgeopt.compile(model, target="x86", backend="tvm", input_shape=[1, 8, 8],
                          out=tmp_path / "a")
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    for threads in (1, 2):
        assert np.abs(load(art.path, threads=threads).run(x.numpy()) - ref).max() <= 1e-5
    assert art.manifest["target"] == "x86_64"  # the alias resolved


@pytest.fixture(scope="module")
def int8_case(tmp_path_factory):
    from edgeopt.testing import tiny_cnn

    calib = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    q = apply(tiny_cnn(), Int8Config(calib_size=64), data=calib, progress=False)
    art = edgeopt.compile(q, target="x86_64-avx2", backend="tvm",
                          out=tmp_path_factory.mktemp("tvm") / "int8")
    return q, art


def test_int8_artifact_agrees_with_simulation(int8_case):
    q, art = int8_case
    x = torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sim = q(x).numpy()
    got = load(art.path).run(x.numpy())
    assert (got.argmax(1) == sim.argmax(1)).mean() >= 0.99
    # The same float arithmetic on the same grid: only a rare rounding tie may flip one
    # activation step.
    assert np.abs(got - sim).max() <= 0.02 * np.abs(sim).max()


def test_int8_weights_are_stored_as_int8(int8_case):
    import tvm

    q, art = int8_case
    m = art.manifest
    assert m["precision"] == "int8" and m["params_file"] == "params.bin"
    params = tvm.runtime.load_param_dict_from_file(str(art.path / "params.bin"))
    assert [params[n].dtype for n in m["param_order"]] == ["int8"] * 3  # conv1, conv2, fc
    n_weights = sum(int(np.prod(params[n].shape)) for n in m["param_order"])
    assert n_weights == 8 * 9 + 8 * 9 + 8 * 5
    assert (art.path / "params.bin").stat().st_size < 4 * n_weights  # not float32


def test_4bit_weights_lower_in_int8_containers(tmp_path):
    from edgeopt.testing import tiny_cnn

    calib = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    cfg = QuantConfig(weights=QuantSpec(bits=4, symmetric=True, per_channel=True),
                      calib_size=64)
    q = apply(tiny_cnn(), cfg, data=calib, progress=False)
    art = edgeopt.compile(q, target="x86_64", backend="tvm", out=tmp_path / "w4")
    with torch.no_grad():
        sim = q(calib).numpy()
    got = load(art.path).run(calib.numpy())
    assert (got.argmax(1) == sim.argmax(1)).mean() >= 0.99
    assert np.abs(got - sim).max() <= 0.02 * np.abs(sim).max()


def test_unlowerable_operator_is_named_with_its_layer(tmp_path):
    class Fft(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.mix = Fft()
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.mix(self.conv(x)), 1))

    out = tmp_path / "bad"
    with pytest.raises(ExportError) as err:
        edgeopt.compile(Net().eval(), backend="tvm", input_shape=[1, 8, 8], out=out)
    msg = str(err.value)
    assert "fft" in msg and "'mix'" in msg and "TVM" in msg and "\n" not in msg
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]  # no staging left
