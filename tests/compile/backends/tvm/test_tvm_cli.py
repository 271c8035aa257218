"""`edgeopt compile --backend tvm` and `edgeopt optimize --backend tvm`, in-process."""

import numpy as np
import pytest
import torch

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")

from edgeopt.cli import main  # noqa: E402
from edgeopt.runtime import load  # noqa: E402


def test_compile_backend_tvm(model_factories, tmp_path, capsys):

    out = tmp_path / "art"
    rc = main(["compile", f"{model_factories}:tiny_cnn", "--target", "amd64", "--backend", "tvm",
               "--precision", "fp32", "--input-shape", "1,8,8", "--out", str(out)])
    assert rc == 0
    assert "fp32 tvm artifact for x86_64" in capsys.readouterr().out
    pred = load(out)
    assert pred.backend == "tvm" and pred.manifest["preprocessing"]["scale"] == pytest.approx(1 / 255)
    from edgeopt_test_models import tiny_cnn

    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        ref = tiny_cnn()(x).numpy()
    assert np.abs(pred.run(x.numpy()) - ref).max() <= 1e-5


def test_compile_refuses_backend_the_target_lacks(model_factories, tmp_path, capsys):
    out = tmp_path / "art"
    rc = main(["compile", f"{model_factories}:tiny_cnn", "--target", "cuda",
               "--backend", "onnxruntime", "--input-shape", "1,8,8", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert "cuda" in err and "tvm" in err
    assert not out.exists()


def test_targets_listing_shows_tvm_targets(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("x86_64", "x86_64-avx512", "aarch64", "rpi4", "rpi5", "jetson-orin", "cuda"):
        assert f"\n{name} " in "\n" + out
    assert "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72" in out
    assert "cuda -arch=sm_87" in out


def test_optimize_backend_option_reaches_options(monkeypatch, tmp_path):
    import edgeopt.pipeline

    seen = {}

    def fake_optimize(model, data, *, options, **kwargs):
        seen["backend"] = options.backend
        raise SystemExit(0)

    monkeypatch.setattr(edgeopt.pipeline, "optimize", fake_optimize)
    with pytest.raises(SystemExit):
        main(["optimize", "m:f", "--data", "digits", "--backend", "tvm", "--out",
              str(tmp_path / "o")])
    assert seen == {"backend": "tvm"}
