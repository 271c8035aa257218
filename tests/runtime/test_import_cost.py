"""``import edgeopt.runtime`` on a device: no torch, no onnx, no compression code.

In a fresh interpreter, because this test process has long imported all of them."""

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("code", [
    "import edgeopt.runtime",
    "import edgeopt.compile.backends.onnxruntime.runtime",
    "import edgeopt",
    "import edgeopt.runtime.text",
])
def test_the_runtime_imports_no_torch_onnx_or_compression_code(code):
    loaded = _modules_after(code)
    assert {"torch", "onnx", "tensorly", "edgeopt.compress", "transformers"} & loaded == set()


def test_compress_apply_still_checks_budgets_in_the_default_backends_bytes():
    # The default size model is registered lazily by the package's top, whatever is
    # imported first: compress never imports compile.
    loaded = _modules_after(
        "from edgeopt.core.sizing import default_size_model\n"
        "from edgeopt.compile.backends.registry import get_backend\n"
        "assert default_size_model() == get_backend('onnxruntime').size_model\n")
    assert "edgeopt.compile.backends.onnxruntime" in loaded
