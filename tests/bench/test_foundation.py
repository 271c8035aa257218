import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import foundation  # noqa: E402


def test_foundation_bench_runs_on_a_tiny_setting(tmp_path, capsys):
    out = tmp_path / "res.json"
    assert foundation.main(["--tiny", "--model", "resnet_small", "--json", str(out)]) == 0
    (res,) = json.loads(out.read_text())
    assert res["n_eval"] == 64
    assert res["floor"]["int8_weights"] > 70_000  # resnet_small has ~300K weights... at width 32
    assert 0 < res["size_ratio"] < 0.35
    assert res["over_floor"] < 0.25
    text = capsys.readouterr().out
    for stage in ("fp32 pytorch", "int8 simulated", "fp32 onnxruntime", "int8 onnxruntime"):
        assert stage in text
    assert text.count("PASS") + text.count("FAIL") == 5
