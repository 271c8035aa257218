import json

import pytest

from edgeopt.core.errors import ArtifactError
from edgeopt.evaluate import Latency, Report, StageResult, stage_table, write_report


def lat(batch, p50, p90):
    return Latency(batch=batch, p50_ms=p50, p90_ms=p90, mean_ms=p50, repeats=50, threads=4)


def make_report():
    fp32 = StageResult(
        name="fp32",
        backend="torch",
        precision="fp32",
        accuracy_top1=91.50,
        accuracy_top5=99.10,
        size_bytes=4_000_000,
        latency={1: lat(1, 2.0, 2.5), 32: lat(32, 40.0, 44.0)},
    )
    int8 = StageResult(
        name="int8",
        backend="onnxruntime",
        precision="int8",
        accuracy_top1=91.38,
        accuracy_top5=99.00,
        agreement=99.2,
        size_bytes=1_000_000,
        latency={1: lat(1, 1.0, 1.2), 32: lat(32, 20.0, 21.0)},
        notes="QDQ",
    )
    big = StageResult(
        name="<fat>",
        backend="tvm",
        precision="fp32",
        accuracy_top1=91.50,
        size_bytes=8_000_000,
        latency={32: lat(32, 80.0, 90.0)},
    )
    return Report(
        model="resnet8",
        dataset="fashion-mnist",
        n_eval=10000,
        stages=[fp32, int8, big],
        meta={"threads": 4, "recipe": {"name": "int8"}},
    )


def test_json_round_trip():
    report = make_report()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["format_version"] == 1
    assert data["stages"][1]["latency"]["32"]["p50_ms"] == 20.0
    back = Report.from_dict(data)
    assert back == report
    assert back.stages[0].latency[32] == lat(32, 40.0, 44.0)


def test_malformed_report():
    with pytest.raises(ArtifactError, match="malformed report"):
        Report.from_dict({"model": "m", "dataset": "d", "n_eval": 1, "stages": [{"name": "x"}]})


def test_stage_table_is_aligned_plain_text():
    lines = stage_table(make_report()).splitlines()
    assert len(lines) == 2 + 3
    header = lines[0].split()
    assert header[:7] == ["stage", "backend", "precision", "top-1", "top-5", "agree", "size"]
    assert "p50@32" in header and "p90@1" in header and "x@32" in header
    assert len({len(line) for line in lines}) == 1  # last column right-aligned throughout
    assert "\x1b" not in "".join(lines)
    int8 = lines[3].split()
    assert int8[:4] == ["int8", "onnxruntime", "int8", "91.38"]
    assert int8[-2:] == ["4.0x", "2.0x"]
    # The third stage has no batch-1 timing: dashes, not a crash.
    assert lines[4].split()[-2:] == ["0.5x", "0.5x"]
    assert "-" in lines[4].split()


def test_write_report(tmp_path):
    report = make_report()
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths
    )  # no temporary files left behind

    assert Report.from_dict(json.loads(paths[0].read_text())) == report

    md = paths[1].read_text()
    for name in ("fp32", "int8", "<fat>"):
        assert f"| {name} |" in md
    assert "int8: 4.0x smaller, 2.0x faster at batch 32, -0.12 points top-1 vs fp32" in md
    assert "<fat>: 2.0x larger, 2.0x slower at batch 32, +0.00 points top-1 vs fp32" in md
    assert "| --- | --- | --- | ---: |" in md

    page = paths[2].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<table>") == 1 and page.count("<tr>") == 4
    assert "<td>int8</td>" in page
    assert "&lt;fat&gt;" in page and "<fat>" not in page
    assert "src=" not in page and "href=" not in page and "http" not in page


def test_compression_section_says_what_each_records_summary_says(tmp_path):
    """The report names no technique: each step's lines are its record's own
    (StepRecord.summary and report_lines), and a JSON-loaded report renders the same."""
    from edgeopt.core.step import StepRecord
    from edgeopt.evaluate.report import compression_lines, to_markdown

    class Made(StepRecord):
        def summary(self):
            return [f"{self.details['n']} things made", "all of them round"]

        def report_lines(self):
            return ["", "| thing | size |", "|---|---:|", "| a | 1 |", ""]

    made = Made("thing making", {"n": 3}, step="make")
    plain = StepRecord("nothing much", step="noop")
    report = make_report()
    report.meta["compression"] = {"steps": [made.to_dict(), plain.to_dict()]}
    lines = compression_lines(report.meta["compression"])
    assert lines[0] == "- thing making: 3 things made; all of them round"
    assert lines[1:6] == ["", "| thing | size |", "|---|---:|", "| a | 1 |", ""]
    assert lines[6] == "- nothing much"
    write_report(report, tmp_path)
    again = Report.from_dict(json.loads((tmp_path / "report.json").read_text()))
    assert "## Compression\n\n- thing making: 3 things made" in to_markdown(again)
    # A record that is not a list of steps (the ONNX-graph path's) is one line.
    assert compression_lines({"technique": "int8 (onnx_ptq)", "float_kept": []}) == [
        "- int8 (onnx_ptq)"]
