"""MetaSchedule tuning of TVM builds: resumable log, tuned numerics, refusals, CLI flags."""

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")

import edgeopt  # noqa: E402
from edgeopt.cli import main  # noqa: E402
from edgeopt.compile.api import TuneConfig, prepare  # noqa: E402
from edgeopt.compile.backends.tvm import tune  # noqa: E402
from edgeopt.core.errors import ConfigError  # noqa: E402
from edgeopt.runtime import load  # noqa: E402

SHAPE = [1, 8, 8]
needs_metaschedule = pytest.mark.skipif(
    not tune._ir_serialization_works(),
    reason="this TVM build crashes serializing IR, so MetaSchedule cannot run",
)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ConvNet().eval()


def _max_diff(art, model, batch: int) -> float:
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    return float(np.abs(load(art.path, threads=1).run(x.numpy()) - ref).max())


def test_batch1_dispatch_matches_pytorch(model):
    """The batch-1 copy and the dynamic copy both compute the model (no tuning needed)."""
    import tvm
    from tvm import relax

    from edgeopt.compile.backends.tvm import export
    from edgeopt.compile.targets import get_target

    target = get_target("x86_64")
    mod, _ = export._import(prepare(model, SHAPE)[0], SHAPE)
    mod = tune.add_batch1_path(mod)
    assert {gv.name_hint for gv in mod.get_global_vars()} == {"main", "main_batch1",
                                                               "main_dynamic"}
    tvm_target = tvm.target.Target(target.tvm)
    with tvm_target:
        lowered = export._cpu_pipeline(target, [])(mod)
    vm = relax.VirtualMachine(relax.build(lowered, tvm_target, relax_pipeline=None), tvm.cpu())
    for batch in (1, 3):
        x = torch.randn(batch, *SHAPE)
        got = vm["main"](tvm.runtime.tensor(x.numpy()))
        got = (got if hasattr(got, "numpy") else got[0]).numpy()
        assert np.abs(got - model(x).detach().numpy()).max() <= 1e-4


@needs_metaschedule
def test_tune_resume_and_replay(model, tmp_path):
    log = tmp_path / "log"
    cfg = TuneConfig(seconds=20, log_dir=log, trials_per_task=4)
    first = edgeopt.compile(model, backend="tvm", input_shape=SHAPE, tune=cfg,
                            out=tmp_path / "a").manifest["tuning"]
    records = (log / tune.RECORD_FILE).read_text().splitlines()
    assert first["applied"] and first["new_trials"] > 0 and len(records) == first["new_trials"]
    assert first["tasks_applied"] >= 1

    second = edgeopt.compile(model, backend="tvm", input_shape=SHAPE, tune=cfg,
                             out=tmp_path / "b").manifest["tuning"]
    # Tasks with their 4 records are not measured again; the log only grows.
    assert second["records_total"] >= first["records_total"]
    assert second["new_trials"] <= first["tasks"] * 4 - first["new_trials"]

    replay = edgeopt.compile(model, backend="tvm", input_shape=SHAPE, out=tmp_path / "c",
                             tune=TuneConfig(seconds=0, log_dir=log))
    m = replay.manifest["tuning"]
    assert m["new_trials"] == 0 and m["records_digest"] == second["records_digest"]
    for batch in (1, 4):
        assert _max_diff(replay, model, batch) <= 1e-4


def test_onnxruntime_with_tuning_is_refused(model, tmp_path):
    with pytest.raises(ConfigError, match="tuning needs --backend tvm"):
        edgeopt.compile(model, backend="onnxruntime", input_shape=SHAPE, out=tmp_path / "a",
                        tune=TuneConfig(seconds=1, log_dir=tmp_path / "log"))
    assert not (tmp_path / "a").exists()


def test_cross_target_tuning_is_refused(model, tmp_path):
    with pytest.raises(ConfigError, match="cannot tune for aarch64 .*measures candidates"):
        edgeopt.compile(model, target="aarch64", backend="tvm", input_shape=SHAPE,
                        out=tmp_path / "a", tune=TuneConfig(seconds=1, log_dir=tmp_path / "l"))


def test_config_validation():
    with pytest.raises(ConfigError, match="seconds must be >= 0"):
        TuneConfig(seconds=-1, log_dir="x")
    with pytest.raises(ConfigError, match="trials per task"):
        TuneConfig(seconds=1, log_dir="x", trials_per_task=0)


def test_cli_flags(model_factories, tmp_path, capsys):
    base = ["compile", f"{model_factories}:tiny_cnn", "--backend", "tvm", "--input-shape", "1,8,8",
            "--precision", "fp32", "--out", str(tmp_path / "art")]
    assert main([*base, "--tune-seconds", "5"]) != 0
    assert "needs both --tune-seconds and --tuning-log" in capsys.readouterr().err
    code = main([*base, "--tune-seconds", "10", "--tuning-log", str(tmp_path / "log"),
                 "--tune-trials", "2"])
    if not tune._ir_serialization_works():
        assert code != 0 and "MetaSchedule cannot run" in capsys.readouterr().err
        assert not (tmp_path / "art").exists()
        return
    assert code == 0
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["tuning"]["applied"] and manifest["tuning"]["batch"] == 1
