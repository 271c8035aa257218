"""The README's commands are the ones the project runs."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_is_two_make_targets_that_exist():
    block = README.split("## Quick start")[1].split("```sh")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_python_api_example_runs(tmp_path):
    from edgeopt.zoo.resnet import resnet_small

    code = README.split("## Python API")[1].split("```python")[1].split("```")[0]
    code = code.replace('"fashion-mnist"', '"digits"').replace('"out/"', repr(str(tmp_path / "o")))
    code = code.replace("subset(512", "subset(64")
    env = {"model": resnet_small(width=8).eval(),
           "raw_uint8_images": np.zeros((3, 1, 8, 8), np.uint8)}
    exec(compile(code, "README.md", "exec"), env)
    assert env["logits"].shape == (3, 10)
    assert (tmp_path / "o" / "manifest.json").is_file()


def test_make_demo_text_runs_the_text_path(tiny_hf, tmp_path):
    """The README's one extra command for text: the Makefile target itself, on the tiny
    BERT (HF=) instead of MiniLM and 16 fortunes, so it runs in seconds."""
    import json
    import shutil
    import subprocess

    import pytest

    assert "`make demo-text`" in README
    if not (ROOT / ".venv" / ".installed").is_file() or shutil.which("make") is None:
        pytest.skip("make demo-text needs `make setup`'s .venv and make")
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("fortunes is not installed (apt-get install fortunes)")
    out = tmp_path / "demo-text"
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "demo-text", f"HF={tiny_hf}",
                          "TEXT_EVAL=16", f"TEXT_OUT={out}"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"^int8 onnxruntime\s+onnxruntime\s+int8", res.stdout, re.M)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["text"]["max_length"] == 64
