"""compile: lower a model to an artifact folder for a target. ``edgeopt.compile(model, ...)``
calls ``edgeopt.compile.api.compile``."""

from edgeopt.core.callable_module import make_callable

make_callable(__name__, "edgeopt.compile.api:compile")

# The ONNX exporter registers the artifact size measure that size-budgeted
# compression (mixed precision) uses; compress cannot import compile itself.
from edgeopt.compile.onnx import exporter as _exporter  # noqa: E402, F401
