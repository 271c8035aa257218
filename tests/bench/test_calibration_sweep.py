import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import calibration_sweep  # noqa: E402


def test_sweep_compares_every_estimator_through_artifacts(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert calibration_sweep.main(["--tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1 + 2 * len(calibration_sweep.CANDIDATES)
    assert rows[0]["config"].startswith("fp32")
    for r in rows[1:]:
        assert 0 <= r["top1"] <= 100 and r["agreement"] > 50
    assert "best:" in capsys.readouterr().out
