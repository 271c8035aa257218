"""compile: lower a model to an artifact folder for a target. ``edgeopt.compile(model, ...)``
calls ``edgeopt.compile.api.compile``."""

from edgeopt.core.callable_module import make_callable

make_callable(__name__, "edgeopt.compile.api:compile")
