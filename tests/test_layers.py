"""The layer contracts in pyproject.toml ([tool.importlinter], docs/architecture.md) hold for
the package, and break when code imports upwards: a contract that cannot fail proves nothing.

Also: no import of edgeopt is hidden in a function (where import-linter still sees it, but a
reader takes it for a dodged cycle) unless it is one of the few deferred on purpose below.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install "
                    "'edgeopt[dev]')")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "edgeopt layers: imports only point downwards"
RUNTIME = "runtime: numpy and the backend's runtime only"

# module -> the edgeopt modules it may import inside a function, and why.
DEFERRED = {
    # Each command imports what it runs.
    "edgeopt.cli": "*",
    # Each fuzzed loader imports the code it fuzzes when its cases run (in the bench, in a
    # child process of its own): fuzzing the manifest must not import torch.
    "edgeopt.fuzz.loaders": "*",
    "edgeopt.fuzz.seeds": {"edgeopt.recipes"},
    # The guest Python runs it as a script: --standalone needs nothing of edgeopt.
    "edgeopt.emulate.runner": {"edgeopt.runtime", "edgeopt.core.errors"},
    # core.graph imports torch; evaluating a Predictor or a numpy callable must not.
    "edgeopt.evaluate.runnable": {"edgeopt.core.graph"},
    "edgeopt.evaluate.chunked": {"edgeopt.core.graph"},
    # The package's top registers the default backend's size model for compress.apply;
    # importing compile there would pull torch into `import edgeopt.runtime`.
    "edgeopt": {"edgeopt.compile.backends.registry"},
    # fortunes builds on text's dataset type; text's loader hands the name on to it.
    "edgeopt.core.data.text": {"edgeopt.core.data.fortunes"},
    # TVM is an optional extra: only a TVM build imports it.
    "edgeopt.auto.run": {"edgeopt.compile.backends.tvm.fp16_host"},
}


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts on the ``edgeopt`` in ``package_parent``."""
    script = Path(sys.executable).with_name("lint-imports")
    cmd = [str(script)] if script.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([*cmd, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=package_parent, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_package_keeps_every_contract():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{LAYERS} KEPT" in res.stdout and f"{RUNTIME} KEPT" in res.stdout
    assert "2 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    shutil.copytree(ROOT / "edgeopt", tmp_path / "edgeopt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # core reaching up to the pipeline, and the device runtime importing torch.
    (tmp_path / "edgeopt/core/upward.py").write_text("from edgeopt import pipeline  # noqa\n")
    (tmp_path / "edgeopt/runtime/heavy.py").write_text("import torch  # noqa\n")
    # A new backend's runtime is under the contract without being listed in it.
    (tmp_path / "edgeopt/compile/backends/null").mkdir()
    (tmp_path / "edgeopt/compile/backends/null/__init__.py").write_text("")
    (tmp_path / "edgeopt/compile/backends/null/runtime.py").write_text("import torch  # noqa\n")
    res = lint_imports(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{LAYERS} BROKEN" in res.stdout and f"{RUNTIME} BROKEN" in res.stdout
    assert "edgeopt.core is not allowed to import edgeopt.pipeline" in res.stdout
    assert "edgeopt.core.upward -> edgeopt.pipeline (l.1)" in res.stdout
    assert "edgeopt.runtime.heavy -> torch (l.1)" in res.stdout
    assert "edgeopt.compile.backends.null.runtime -> torch (l.1)" in res.stdout


def _function_level_imports(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, *[node.module or ""]]).rstrip(".") if node.level
                         else node.module]
            else:
                continue
            yield from ((name, node.lineno) for name in names if name.startswith("edgeopt"))


def test_no_import_of_edgeopt_hides_in_a_function_without_a_reason():
    found = []
    for path in sorted((ROOT / "edgeopt").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        # edgeopt.cli's entry covers its modules (a package of commands); others are exact.
        allowed = DEFERRED.get(module) or ("*" if module.startswith("edgeopt.cli.") else set())
        found += [f"{module}:{line} imports {name}"
                  for name, line in _function_level_imports(path, module)
                  if allowed != "*" and name not in allowed]
    assert found == []
