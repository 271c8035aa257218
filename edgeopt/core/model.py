"""Loading a user's model from any supported form into a ``ModelHandle``.

MODEL is ``.onnx``, ``.pt2`` (torch.export), ``.pt``/``.ts`` (TorchScript), or
``pkg.module:factory`` with ``--weights state_dict.pt``. We never unpickle a
file: TorchScript and ``.pt2`` archives are loaded by their own loaders, and
state dicts with ``weights_only=True``.
"""

from __future__ import annotations

import importlib
import io
import os
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeopt.core.canonical import probe_batch_range
from edgeopt.core.errors import ModelLoadError
from edgeopt.core.errors import first_line as _first_line
from edgeopt.core.graph import batch_range, eval_mode
from edgeopt.core.onnx_import import load_onnx
from edgeopt.core.pt2_load import load_exported

MODEL_SUFFIXES = (".onnx", ".pt2", ".pt", ".ts")

# torch 2.13 warns, from its own pytree code, on every copy of a loaded .pt2 program
# (copyreg re-creating a LeafSpec): dozens of lines per optimize that say nothing to a user.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        category=FutureWarning)


@dataclass
class ModelHandle:
    """A loaded model: a runnable torch module plus what we know about its input."""

    module: nn.Module
    source: str
    kind: str  # onnx | pt2 | torchscript | factory | module
    input_shape: list[int] | None = None  # (C, H, W) when the file declares it
    info: dict = field(default_factory=dict)

    def batch_range(self, example: torch.Tensor | None = None) -> tuple[int, int | None] | None:
        """(min, max) batch the model takes, None for any (see ``core.graph.batch_range``).
        A .pt2 declares it; a TorchScript module is probed once on ``example``."""
        if "batch_range" not in self.info and example is not None and self.kind == "torchscript":
            self._record_batches(probe_batch_range(self.module, example))
        found = self.info.get("batch_range")
        return None if found is None else (found[0], found[1])

    def _record_batches(self, batches: tuple[int, int | None] | None) -> None:
        # Evaluation and timing then run the model in batches it takes (evaluate.chunked).
        if batches is not None:
            self.info["batch_range"] = list(batches)
            if batches[0] == batches[1]:
                self.info["static_batch"] = batches[0]

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.kind != "factory" else self.source.split(":")[-1]


def _load_pt2(path: str) -> ModelHandle:
    try:
        ep = load_exported(path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a valid torch.export (.pt2) file: {_first_line(exc)}") from None
    try:
        # A program torch deserialized can still be inconsistent (a call graph without a
        # signature): rebuilding the module is where that shows.
        shape = _pt2_input_shape(ep)
        module, batches = ep.module(), batch_range(ep)
    except Exception as exc:  # noqa: BLE001 - torch raises AttributeError, KeyError, ...
        raise ModelLoadError(f"{path} is not a valid torch.export (.pt2) file: its program "
                             f"cannot be rebuilt ({_first_line(exc)})") from None
    handle = ModelHandle(module, path, "pt2", shape)
    handle._record_batches(batches)  # it runs only at the batches it was exported for
    return handle


def _pt2_input_shape(ep) -> list[int] | None:
    """(C, H, W) of the first user input, when its sample dims are static."""
    for spec, node in zip(ep.graph_signature.input_specs, ep.graph.nodes):
        if spec.kind.name == "USER_INPUT" and "val" in node.meta:
            dims = list(node.meta["val"].shape)[1:]
            return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None
    return None


def _zip_names(path: str) -> list[str] | None:
    """The members of a zip file, None for a file that is no zip at all."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except Exception as exc:  # noqa: BLE001 - BadZipFile, NotImplementedError, EOFError, ...
        raise ModelLoadError(f"{path} is not a valid TorchScript file: damaged zip archive "
                             f"({_first_line(exc)})") from None


def _without_debug_info(path: str, names: list[str] | None):
    """The archive without its ``*.debug_pkl`` members (source ranges for error messages),
    as a buffer: torch's reader of those segfaults on damaged ones (fuzzing found one), and
    the model loads and runs the same without them."""
    if names is None or not any(n.endswith(".debug_pkl") for n in names):
        return path
    buf = io.BytesIO()
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as out:
            for name in names:
                if not name.endswith(".debug_pkl"):
                    out.writestr(src.getinfo(name), src.read(name))
    except Exception as exc:  # noqa: BLE001 - a member's data fails its CRC, or inflating
        raise ModelLoadError(f"{path} is not a valid TorchScript file: damaged zip archive "
                             f"({_first_line(exc)})") from None
    buf.seek(0)
    return buf


def _check_pickles(path: str, names: list[str] | None) -> None:
    """Each ``*.pkl`` member (weights' index, constants, traced inputs) read through as
    opcodes by pickletools, which executes nothing: torch's C++ unpickler trusts a string's
    declared length, and a damaged one declaring 4 GB kept torch.jit.load busy for minutes
    on an 11 kB file (fuzzing found it)."""
    pickles = [n for n in names or () if n.endswith(".pkl")]
    if not pickles:
        return
    with zipfile.ZipFile(path) as z:
        for name in pickles:
            try:
                ops = list(pickletools.genops(z.read(name)))
            except Exception as exc:  # noqa: BLE001 - truncated or unknown opcodes, CRC, inflate
                raise ModelLoadError(f"{path} is not a valid TorchScript file: damaged member "
                                     f"{name} ({_first_line(exc)})") from None
            if not ops or ops[-1][0].name != "STOP":
                raise ModelLoadError(f"{path} is not a valid TorchScript file: damaged member "
                                     f"{name} (no STOP opcode)")


def _load_torchscript(path: str) -> ModelHandle:
    names = _zip_names(path)
    if names is not None:
        if not any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise ModelLoadError(
                f"{path} is a pickled PyTorch file, not TorchScript; edgeopt does not unpickle "
                f"files (save with torch.jit.save, torch.export.save, or pass "
                f"pkg.module:factory --weights state_dict.pt)"
            )
        _check_pickles(path, names)
    try:
        module = torch.jit.load(_without_debug_info(path, names), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a valid TorchScript file: {_first_line(exc)}") from None
    return ModelHandle(module.eval(), path, "torchscript")


def build_from_factory(spec: str, kwargs: dict | None = None) -> nn.Module:
    """``pkg.module:factory`` called with ``kwargs``; one ``ModelLoadError`` line on failure."""
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import model factory {spec}: {_first_line(exc)}") from None
    call = f"{spec}({kwargs or ''})"
    try:
        module = factory(**(kwargs or {}))
    except Exception as exc:
        raise ModelLoadError(f"model factory {call} failed: {_first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"model factory {call} returned {type(module).__name__}, not nn.Module")
    return module


def _load_factory(spec: str, weights: str | None) -> ModelHandle:
    module = build_from_factory(spec)
    if weights is not None:
        load_weights(module, weights)
    return ModelHandle(module.eval(), spec, "factory", info={"weights": weights})


def load_weights(module: nn.Module, weights: str) -> None:
    if not os.path.isfile(weights):
        raise ModelLoadError(f"weights file {weights} does not exist")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{weights} is not a readable state_dict: {_first_line(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{weights} does not fit the model: {_first_line(exc)}") from None


def load_model(spec: str | nn.Module, *, weights: str | None = None) -> ModelHandle:
    """Load MODEL as DESIGN.md describes; every failure is one ``ModelLoadError`` line."""
    if isinstance(spec, nn.Module):
        return ModelHandle(eval_mode(spec), type(spec).__name__, "module")
    spec = str(spec)
    suffix = Path(spec).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        if not os.path.isfile(spec):
            raise ModelLoadError(f"model file {spec} does not exist")
        if weights is not None:
            raise ModelLoadError(f"--weights applies to pkg.module:factory models, not {suffix} files")
        if suffix == ".onnx":
            module, shape = load_onnx(spec)
            return ModelHandle(module, spec, "onnx", shape)
        if suffix == ".pt2":
            return _load_pt2(spec)
        return _load_torchscript(spec)
    if ":" in spec and not os.path.exists(spec):
        return _load_factory(spec, weights)
    raise ModelLoadError(
        f"cannot tell what kind of model {spec} is (expected {', '.join(MODEL_SUFFIXES)} "
        f"or pkg.module:factory)"
    )
