"""Loading a ``.pt2`` without running code from the file (issue 14).

``torch.export.load`` can run code a ``.pt2`` holds, in two ways (torch 2.13):

- unpickling. Sample inputs that ``torch.load(weights_only=True)`` refuses are loaded
  again with ``weights_only=False`` (``_export.serde.serialize.deserialize_torch_artifact``),
  weights and constants marked ``use_pickle`` go to ``weights_only=False`` directly, and
  "opaque" and custom-object constants are ``pickle.loads`` and
  ``torch._C._pickle_load_obj`` (``export.pt2_archive._package``). A pickle in place of
  the sample inputs ran its payload in ``load_model`` before this module.
- ``sympy.sympify``, an ``eval``, of every symbolic-shape expression in the program.

``load_exported`` closes both: the expressions are checked first (``_safe_expression``:
names, numbers, arithmetic, comparisons and calls of named functions such as
``FloorDiv(s0, 2)`` or ``Symbol('s0', integer=True)``; no attributes, subscripts,
lambdas, or strings but a Symbol's name), and the load runs
with every ``torch.load`` forced to ``weights_only=True`` and the two raw unpicklers
refused. The patches are process-wide while a file loads: loading is not meant to run
beside other threads that unpickle.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import pickle
import types
import zipfile
from collections.abc import Iterator

from edgeopt.core.errors import ModelLoadError

REFUSED = "holds pickled Python objects (edgeopt does not unpickle files)"
# Functions an exported program's shape expressions call: sympy's and torch's sympy
# functions are classes (FloorDiv, Max, Eq); these few are lower-case.
_LOWER_CASE_CALLS = {"floor", "ceiling", "sqrt", "log", "exp"}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call,
          ast.keyword, ast.Name, ast.Load, ast.Constant, ast.operator, ast.unaryop, ast.boolop,
          ast.cmpop)


def _safe_expression(text: str) -> bool:
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    # torch writes symbols as Symbol('s31', positive=True, integer=True): a string is
    # allowed there only, as the name of a Symbol.
    names = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "Symbol"
             for arg in node.args[:1]}
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            return False
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            return False
        if isinstance(node, ast.Constant) and not (isinstance(node.value, int | float) or (
                isinstance(node.value, str) and id(node) in names)):
            return False
        if isinstance(node, ast.Call) and (
                not isinstance(node.func, ast.Name)
                or not (node.func.id[:1].isupper() or node.func.id in _LOWER_CASE_CALLS)
                or any(not (k.arg or "_")[0].isalpha() for k in node.keywords)):
            return False
    return True


def _expressions(tree) -> Iterator[str]:
    """Every ``expr_str`` in a serialized program (JSON), however deep."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            value = node.get("expr_str")
            if isinstance(value, str):
                yield value
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_expressions(path: str) -> None:
    """Refuse a program whose shape expressions are more than arithmetic (see module doc).
    Members that are not readable JSON are left to torch, which refuses them itself."""
    try:
        with zipfile.ZipFile(path) as z:
            members = [(n, z.read(n)) for n in z.namelist() if n.endswith(".json")]
    except Exception:  # noqa: BLE001 - a damaged archive is reported by torch's own load
        return
    for name, data in members:
        try:
            tree = json.loads(data)
        except (ValueError, RecursionError):
            continue
        for text in _expressions(tree):
            if not _safe_expression(text):
                raise ModelLoadError(f"{path}: {name} holds the shape expression {text[:80]!r}, "
                                     "which is not arithmetic (refused: loading evaluates it)")


def _refuse(*args, **kwargs):
    raise ModelLoadError(REFUSED)


@contextlib.contextmanager
def _no_unpickling() -> Iterator[None]:
    import torch
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def weights_only_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        kwargs.pop("pickle_module", None)
        try:
            return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError:
            raise ModelLoadError(REFUSED) from None

    safe_pickle = types.ModuleType("pickle")
    safe_pickle.__dict__.update(pickle.__dict__)
    safe_pickle.load = safe_pickle.loads = _refuse
    saved = torch.load, _package.pickle, torch._C._pickle_load_obj
    torch.load, _package.pickle, torch._C._pickle_load_obj = (weights_only_load, safe_pickle,
                                                               _refuse)
    # torch.export logs a traceback as a warning for every archive it cannot read, before
    # the error that edgeopt turns into its one line.
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        torch.load, _package.pickle, torch._C._pickle_load_obj = saved
        logger.setLevel(level)


def load_exported(path: str):
    """``torch.export.load(path)`` without unpickling or evaluating anything from the file;
    one ``ModelLoadError`` line for a file that is refused or is no valid ``.pt2``."""
    import torch

    _check_expressions(path)
    try:
        with _no_unpickling():
            return torch.export.load(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
