"""``edgeopt.compile``: lower a (compressed) model to an artifact for a target."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx

from edgeopt.compile.artifact import ArtifactWriter
from edgeopt.compile.backends.registry import DEFAULT_BACKEND, conversions, get_backend, tunable
from edgeopt.compile.backends.tvm.tune import TuneConfig  # imports without TVM
from edgeopt.compile.targets import get_target
from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.core.canonical import canonical_copy, is_canonical
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.runtime import load as load_artifact


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]

    def load(self, *, threads: int | None = None):
        return load_artifact(self.path, threads=threads)


def model_precision(gm: fx.GraphModule) -> tuple[str, dict[str, str]]:
    """Global precision label and per-layer labels of a canonical model."""
    info = gm.meta.get("edgeopt") or {}
    per_layer = info.get("precision") or {name: "fp32" for name, _ in leaf_modules(gm)}
    quantized = {label for label in per_layer.values() if label != "fp32"}
    if not quantized:
        return "fp32", per_layer
    if quantized == {"w8a8"}:
        return "int8", per_layer
    # One width everywhere reads as that width (w4a8); anything else is mixed.
    return (quantized.pop() if len(quantized) == 1 else "mixed"), per_layer


def prepare(model, input_shape: list[int] | None) -> tuple[fx.GraphModule, list[int]]:
    """A canonical, BN-folded copy of ``model`` and its input shape (C, H, W)."""
    if is_canonical(model):
        gm = canonical_copy(model, None)
        shape = input_shape or gm.meta.get("input_shape")
    else:
        if input_shape is None:
            raise ConfigError("compile needs input_shape=(C, H, W) for a plain nn.Module")
        gm = canonical_copy(model, torch.zeros(2, *input_shape))
        shape = list(input_shape)
    fold_batchnorm(gm)
    return gm, list(shape)


def stage(model, writer: ArtifactWriter, *, target: str = "x86_64",
          backend: str = DEFAULT_BACKEND, precision: str | None = None,
          input_shape: list[int] | None = None, preprocess: dict | None = None,
          recipe: Any = None, tune: TuneConfig | None = None) -> dict[str, Any]:
    """Lower ``model`` into a staged artifact and write its manifest (not committed).

    ``precision``: None (or auto) compiles the model as it is; a label must match it,
    except one the backend converts a float model to (``Backend.conversions``: TVM's
    fp16 for CUDA targets). ``tune``: tuned schedules, for a ``tunable`` backend."""
    t = get_target(target)
    b = get_backend(backend)
    if tune is not None and not b.tunable:
        raise ConfigError(f"tuning needs --backend {' or '.join(tunable())}; "
                          f"backend {backend} has no tuning")
    if backend not in t.backends:
        t.check(backend, "fp32")  # refuses with the backends the target has
    convert = precision if precision in conversions() else None
    if convert:
        # A conversion the backend performs, not a property of the model: the target
        # table says which target/backend pairs build it (and refuses the others).
        t.check(backend, convert)
    gm, shape = prepare(model, input_shape)
    actual, per_layer = model_precision(gm)
    if convert and actual != "fp32":
        raise ConfigError(f"precision {convert!r} converts a float model, but this model is "
                          f"{actual}; compile it as {actual} or start from the float model")
    if precision not in (None, "auto", convert) and precision != actual:
        raise ConfigError(
            f"model is {actual} but precision {precision!r} was asked for; "
            f"quantize it first (edgeopt optimize --recipe int8)"
        )
    t.check(backend, actual)
    fields = b.export(gm, writer, input_shape=shape, target=t, precision=convert, tune=tune)
    if convert:
        actual, per_layer = convert, {name: convert for name in per_layer}
    return writer.write_manifest({
        "target": t.name,
        **fields,
        "precision": actual,
        "layer_precision": per_layer,
        "preprocessing": preprocess or {"scale": 1.0, "mean": None, "std": None, "layout": "NCHW"},
        "recipe": recipe,
    })


def compile(model, target: str = "x86_64", *, out: str | os.PathLike | None = None,
            backend: str = DEFAULT_BACKEND, precision: str | None = None,
            input_shape: list[int] | None = None, preprocess: dict | None = None,
            recipe: Any = None, force: bool = False, tune: TuneConfig | None = None) -> Artifact:
    """Write an artifact folder for ``model`` (a temporary one when ``out`` is None)."""
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="edgeopt-")) / "artifact"
    with ArtifactWriter(out, force=force) as writer:
        manifest = stage(model, writer, target=target, backend=backend, precision=precision,
                         input_shape=input_shape, preprocess=preprocess, recipe=recipe,
                         tune=tune)
        path = writer.commit()
    return Artifact(path, manifest)
