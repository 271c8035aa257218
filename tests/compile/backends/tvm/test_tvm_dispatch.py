"""Runtime ISA dispatch: the generic x86_64 TVM artifact holds SSE2, AVX2 and AVX-512
builds, and the runtime loads the best one this CPU runs."""

import json
import platform
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")
if platform.machine() != "x86_64":
    pytest.skip("ISA dispatch is built for x86_64 hosts", allow_module_level=True)

import edgeopt  # noqa: E402
from edgeopt import Int8Config, apply  # noqa: E402
from edgeopt.compile.backends.tvm.runtime import ISA_ENV, choose_library, cpu_flags  # noqa: E402
from edgeopt.compile.targets import get_target  # noqa: E402
from edgeopt.core.errors import ArtifactError  # noqa: E402
from edgeopt.core.files import sha256_file  # noqa: E402
from edgeopt.runtime import load  # noqa: E402

SHAPE = [1, 8, 8]
ISAS = ["avx512", "avx2", "baseline"]  # best first, as the manifest lists them
HOST = cpu_flags() or set()


def _host_runs(isa: str) -> bool:
    if isa == "baseline":
        return True
    return set(get_target(f"x86_64-{isa}").cpu_flags) <= HOST


def _best_on_host() -> str:
    return next(isa for isa in ISAS if _host_runs(isa))


@pytest.fixture(scope="module")
def fp32_case(tmp_path_factory, make_cnn):
    # Wide enough that the variants' vector loops (16 fp32 lanes for AVX-512) are used.
    model = make_cnn(seed=5, width=16, hidden=32)
    art = edgeopt.compile(model, target="x86_64", backend="tvm", input_shape=SHAPE,
                          out=tmp_path_factory.mktemp("tvm") / "fp32")
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    assert ref.std(0).max() > 1e-3  # logits that depend on the input
    return art, x.numpy(), ref


def test_manifest_lists_every_variant_with_checksums(fp32_case):
    art, _, _ = fp32_case
    m = json.loads((art.path / "manifest.json").read_text())
    libs = m["libraries"]
    assert [lib["isa"] for lib in libs] == ISAS
    assert [lib["file"] for lib in libs] == ["model-avx512.so", "model-avx2.so", "model.so"]
    assert m["model_file"] == "model.so"  # what a runtime without dispatch loads
    assert set(m["files"]) == {"model.so", "model-avx2.so", "model-avx512.so"}
    for lib in libs:
        f = art.path / lib["file"]
        assert m["files"][lib["file"]]["sha256"] == sha256_file(f)
        assert m["files"][lib["file"]]["size"] == f.stat().st_size
    assert libs[2]["requires"] == []
    assert {"avx2", "fma"} <= set(libs[1]["requires"]) and "avx512f" not in libs[1]["requires"]
    assert {"avx512f", "avx512bw", "avx2"} <= set(libs[0]["requires"])
    assert libs[0]["tvm_target"] == "llvm -mtriple=x86_64-linux-gnu -mcpu=x86-64-v4"
    # Three different builds, not one library copied three times.
    assert len({m["files"][lib["file"]]["sha256"] for lib in libs}) == 3


def test_runtime_loads_the_best_library_this_cpu_runs(fp32_case, monkeypatch):
    art, x, ref = fp32_case
    monkeypatch.delenv(ISA_ENV, raising=False)
    p = load(art.path)
    assert p.isa == _best_on_host()
    assert p.library == {"avx512": "model-avx512.so", "avx2": "model-avx2.so",
                         "baseline": "model.so"}[p.isa]
    assert np.abs(p.run(x) - ref).max() <= 1e-4


@pytest.mark.parametrize("isa", ISAS)
def test_every_variant_matches_pytorch(fp32_case, monkeypatch, isa):
    if not _host_runs(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    art, x, ref = fp32_case
    monkeypatch.setenv(ISA_ENV, isa)
    p = load(art.path, threads=1)
    assert p.isa == isa
    assert np.abs(p.run(x) - ref).max() <= 1e-4
    assert np.abs(p.run(x[:1]) - ref[:1]).max() <= 1e-4


def test_choice_follows_the_cpu_flags(fp32_case):
    art, _, _ = fp32_case
    m = art.manifest
    v3 = set(get_target("x86_64-avx2").cpu_flags)
    assert choose_library(art.path, m, flags=set())["isa"] == "baseline"
    assert choose_library(art.path, m, flags={"sse2", "avx2"})["isa"] == "baseline"  # no fma
    assert choose_library(art.path, m, flags=v3)["isa"] == "avx2"
    assert choose_library(art.path, m, flags=v3 | {"avx512f"})["isa"] == "avx2"
    assert choose_library(art.path, m, flags=set(get_target("x86_64-avx512").cpu_flags))[
        "isa"] == "avx512"


def test_override_is_refused_when_unknown_or_unsupported(fp32_case, monkeypatch):
    art, _, _ = fp32_case
    monkeypatch.setenv(ISA_ENV, "avx10")
    with pytest.raises(ArtifactError, match=r"no such library \(it has: avx512, avx2, baseline"):
        load(art.path)
    monkeypatch.setenv(ISA_ENV, "avx512")
    with pytest.raises(ArtifactError, match="needs CPU features this CPU lacks: .*avx512f"):
        choose_library(art.path, art.manifest, flags=set(get_target("x86_64-avx2").cpu_flags))


@pytest.mark.parametrize("tampered", ["model-avx2.so", "model-avx512.so"])
def test_tampered_variant_is_refused(fp32_case, tmp_path, monkeypatch, tampered):
    art, _, _ = fp32_case
    copy = shutil.copytree(art.path, tmp_path / "copy")
    with open(copy / tampered, "ab") as f:
        f.write(b"\0")
    # Refused even when another library would be the one loaded.
    monkeypatch.setenv(ISA_ENV, "baseline")
    with pytest.raises(ArtifactError, match=f"{tampered} does not match its manifest checksum"):
        load(copy)


def test_manifest_without_libraries_loads_model_file(fp32_case, tmp_path, monkeypatch):
    # Artifacts written before dispatch list one library, model_file.
    art, x, ref = fp32_case
    monkeypatch.delenv(ISA_ENV, raising=False)
    copy = shutil.copytree(art.path, tmp_path / "old")
    m = json.loads((copy / "manifest.json").read_text())
    del m["libraries"]
    (copy / "manifest.json").write_text(json.dumps(m))
    p = load(copy)
    assert p.library == "model.so" and p.isa is None
    assert np.abs(p.run(x) - ref).max() <= 1e-4


def test_baseline_target_and_explicit_variants_build_one_library(tmp_path, make_cnn):
    model = make_cnn(seed=1)
    art = edgeopt.compile(model, target="x86_64-baseline", backend="tvm", input_shape=SHAPE,
                          out=tmp_path / "base")
    assert set(art.manifest["files"]) == {"model.so"}
    assert [lib["isa"] for lib in art.manifest["libraries"]] == ["baseline"]
    assert art.manifest["tvm_target"] == "llvm -mtriple=x86_64-linux-gnu -mcpu=x86-64"
    assert load(art.path).isa == "baseline"
    for name in ("x86_64-avx2", "x86_64-avx512", "aarch64", "rpi5"):
        assert get_target(name).dispatch == ()


def test_int8_variants_share_params_and_agree(tmp_path, monkeypatch):
    from edgeopt.testing import tiny_cnn

    calib = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    q = apply(tiny_cnn(), Int8Config(calib_size=64), data=calib, progress=False)
    art = edgeopt.compile(q, target="x86_64", backend="tvm", out=tmp_path / "int8")
    assert set(art.manifest["files"]) == {"model.so", "model-avx2.so", "model-avx512.so",
                                          "params.bin"}
    outs = {}
    for isa in filter(_host_runs, ISAS):
        monkeypatch.setenv(ISA_ENV, isa)
        outs[isa] = load(art.path).run(calib.numpy())
    base = outs.pop("baseline")
    for got in outs.values():
        assert (got.argmax(1) == base.argmax(1)).mean() >= 0.99
        assert np.abs(got - base).max() <= 1e-3 * np.abs(base).max()
