"""Property-based fuzzing of every user-facing loader (issue 14), for tests and bench.

``LOADERS`` names each loader with its hypothesis strategy of cases (``data_cases``,
``onnx_cases``, ``file_cases``: valid files damaged by ``mutate``), its public entry point
and what a success must hold (``loaders``). ``run_case`` runs one case in a sandbox and classifies it (``harness``):
the only acceptable outcomes are ``ok`` and ``clear`` (a one-line ``EdgeoptError``
naming the file). ``tests/fuzz/test_loaders.py`` runs a few hundred cases per loader;
``bench/fuzz.py`` runs thousands and counts them.

Needs ``hypothesis`` (a dev dependency): nothing in the library imports this package.
"""

from edgeopt.fuzz.harness import OUTCOMES, Loader, Result, Tree, run_case
from edgeopt.fuzz.loaders import LOADERS, warm_up

ACCEPTED = ("ok", "clear")

__all__ = ["ACCEPTED", "LOADERS", "OUTCOMES", "Loader", "Result", "Tree", "run_case", "warm_up"]
