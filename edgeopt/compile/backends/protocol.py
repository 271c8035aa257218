"""What a compile backend is: the ``Backend`` protocol, and ``FolderBackend``, the one
implementation every backend folder declares in its ``__init__.py``.

A backend folder (``compile/backends/<name>/``) has the same files in every backend:

- ``export.py``: ``export(gm, writer, *, input_shape, target, precision, tune)`` writes
  the model files into a staged artifact and returns the manifest fields it owns;
- ``runtime.py``: ``PREDICTOR``, the Predictor class for its artifacts (numpy and the
  backend's runtime only: it runs on the device);
- ``size.py``: ``artifact_bytes(gm)``, the bytes its artifact stores for a canonical
  model (what a size budget is checked in);
- ``lower.py``: the lowering of edgeopt's canonical model to the backend's form.

This module imports neither torch nor a backend's compiler: a backend's ``__init__``
imports it, and ``runtime.load`` imports ``<backend>.runtime`` below that ``__init__``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edgeopt.compile.targets import TARGETS, Target
from edgeopt.core.errors import ArtifactError, ConfigError
from edgeopt.runtime import load as load_artifact
from edgeopt.runtime import read_manifest

if TYPE_CHECKING:  # annotations only: importing torch here would reach the device runtime
    import torch.fx as fx

    from edgeopt.compile.artifact import ArtifactWriter
    from edgeopt.compile.backends.tvm.tune import TuneConfig
    from edgeopt.runtime.predictor import Predictor


@runtime_checkable
class Backend(Protocol):
    """A compile backend, as ``compile.api``, the CLI, recipes and size budgets see it."""

    name: str
    description: str
    # Takes a TuneConfig (tuned schedules); compile refuses tuning for the others.
    tunable: bool
    # Precisions the backend converts a float model to while it builds (TVM: fp16).
    conversions: tuple[str, ...]
    # Stores sub-8-bit weights smaller than int8 ones (packed codes, INT4).
    packed_lowbit: bool

    def export(self, gm: fx.GraphModule, writer: ArtifactWriter, *, input_shape: list[int],
               target: Target, precision: str | None = None,
               tune: TuneConfig | None = None) -> dict[str, Any]:
        """Write the model files into ``writer``; the manifest fields they need.
        ``precision``: one of ``conversions`` to convert to, or None (as the model is)."""
        ...

    def load(self, path: str | os.PathLike, *, threads: int | None = None) -> Predictor:
        """The Predictor of an artifact this backend wrote (checksums verified)."""
        ...

    def size_model(self, gm: fx.GraphModule) -> int:
        """Bytes the artifact of canonical model ``gm`` stores (for size budgets)."""
        ...

    def targets(self) -> tuple[str, ...]:
        """Names of the targets this backend builds for."""
        ...


@dataclass(frozen=True)
class FolderBackend:
    """A backend whose parts are the standard modules of its folder, imported on first
    use: TVM is an optional extra and takes a second to import."""

    name: str
    description: str
    tunable: bool = False
    conversions: tuple[str, ...] = ()
    packed_lowbit: bool = False

    @property
    def package(self) -> str:
        return f"{__package__}.{self.name}"

    def module(self, part: str):
        """``<backend>.<part>`` (export, runtime, size); ConfigError when not installed."""
        try:
            return importlib.import_module(f"{self.package}.{part}")
        except ImportError as exc:
            raise ConfigError(
                f"backend {self.name!r} is not installed ({exc.name or exc}); "
                f"install it with pip install 'edgeopt[{self.name}]'"
            ) from None

    def export(self, gm, writer, *, input_shape, target, precision=None, tune=None):
        return self.module("export").export(gm, writer, input_shape=input_shape, target=target,
                                            precision=precision, tune=tune)

    def load(self, path, *, threads=None):
        backend = read_manifest(path).get("backend")
        if backend != self.name:
            raise ArtifactError(f"artifact {path} was built by backend {backend!r}, "
                                f"not {self.name!r}")
        return load_artifact(Path(path), threads=threads)

    def size_model(self, gm) -> int:
        return self.module("size").artifact_bytes(gm)

    def targets(self) -> tuple[str, ...]:
        return tuple(t.name for t in TARGETS.values() if self.name in t.support)
