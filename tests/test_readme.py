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
