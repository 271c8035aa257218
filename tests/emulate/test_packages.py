"""What the aarch64 guest imports edgeopt.runtime from: edgeopt-runtime's files copied into
the root (no checkout, no stubs). Checked here with the host's Python on the same copy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import edgeopt
from edgeopt.emulate import packages

CHECK = """
import json, sys
import numpy as np
import edgeopt.runtime
y = edgeopt.runtime.load(sys.argv[1]).run(np.zeros((2, 1, 8, 8), np.float32))
print(json.dumps({"file": edgeopt.runtime.__file__, "shape": list(y.shape),
                  "heavy": sorted({"torch", "onnx", "edgeopt.compress"} & set(sys.modules))}))
"""


def test_the_runtime_files_are_the_distributions():
    files = packages.runtime_files()
    assert "edgeopt/runtime/__init__.py" in files
    assert "edgeopt/compile/backends/onnxruntime/runtime.py" in files
    assert "edgeopt/core/errors.py" in files
    # No package __init__ of the full edgeopt: they import torch.
    assert "edgeopt/__init__.py" not in files and "edgeopt/compile/__init__.py" not in files
    assert all(path.is_file() for path in files.values())


def test_the_copy_alone_loads_and_runs_an_artifact(tmp_path, make_cnn):
    site = packages.runtime_site(tmp_path)
    assert packages.runtime_site(tmp_path) == site  # copied once per content
    assert (site / "edgeopt/runtime/predictor.py").is_file()
    art = edgeopt.compile(make_cnn(), target="x86_64", input_shape=[1, 8, 8],
                          out=tmp_path / "art").path
    # Only the copy and the folders of numpy and onnxruntime on the path, as in the guest
    # (run.python_command): no checkout. -S because this venv's site-packages would add
    # the checkout itself (the editable installs' .pth files), which the guest has not.
    deps = {str(Path(importlib.util.find_spec(name).origin).parents[1])
            for name in ("numpy", "onnxruntime")}
    path = os.pathsep.join([str(site), *sorted(deps)])
    proc = subprocess.run([sys.executable, "-S", "-c", CHECK, str(art)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": path,
                               "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["file"].startswith(str(site)) and info["shape"] == [2, 10]
    assert info["heavy"] == []
