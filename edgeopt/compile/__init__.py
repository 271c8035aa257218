"""compile: lower a model to an artifact folder for a target. ``edgeopt.compile(model, ...)``
calls ``edgeopt.compile.api.compile``."""

from edgeopt.core.callable_module import make_callable

make_callable(__name__, "edgeopt.compile.api:compile")

# compress.apply, which names no target, checks size budgets in the default backend's
# bytes; compress cannot import compile itself (a recipe run asks its own backend).
from edgeopt.compile.backends.registry import DEFAULT_BACKEND, get_backend  # noqa: E402
from edgeopt.core.sizing import set_default_size_model  # noqa: E402

set_default_size_model(get_backend(DEFAULT_BACKEND).size_model)
