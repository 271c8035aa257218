"""The Predictor interface every backend's runtime implements (numpy in, numpy out).

A model may have several inputs of any dtype (image tensors, int64 token ids,
float masks, recurrent state, scalars) and several outputs; the manifest lists
them as the model names them. ``run`` takes a dict by input name, or one array
for a single-input model, and returns one array for a single-output model or a
dict by output name otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import DataError
from edgeopt.runtime.text import TextTokenizer  # imports `tokenizers` only when built


def _fits(shape: tuple[int, ...], want: list) -> bool:
    """A fixed (int, > 0) dim must match; a named or unknown dim takes any size."""
    if len(shape) != len(want):
        return False
    return all(not isinstance(w, int) or w <= 0 or w == s for s, w in zip(shape, want))


def _shape_text(want: list) -> str:
    return "(" + ", ".join(str(d) if not isinstance(d, int) or d > 0 else "?" for d in want) + ")"


class Predictor:
    """Runs a loaded artifact. ``run`` takes preprocessed arrays; ``predict`` takes raw
    data and applies the manifest's preprocessing to its uint8 image inputs first."""

    backend: str = "?"

    def __init__(self, path: Path, manifest: dict[str, Any], *, threads: int | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.threads = threads
        # Inputs the compiler bound to constants (e.g. silero-vad's sample rate, so that
        # its `If` folded away): callers may still pass them, with the bound value.
        self.bound = {k: np.asarray(v) for k, v in (manifest.get("bound_inputs") or {}).items()}
        self.inputs = [i for i in manifest["inputs"] if i["name"] not in self.bound]
        self.outputs = manifest.get("outputs") or []
        self.input_name = self.inputs[0]["name"]
        self.input_shape = self.inputs[0]["shape"]  # e.g. ["N", C, H, W]
        self._tokenizer = None  # text artifacts: built on the first predict (runtime.text)

    # ------------------------------------------------------------------ inputs

    def _check(self, x: np.ndarray, spec: dict | None = None) -> np.ndarray:
        spec = spec or self.inputs[0]
        dtype = np.dtype(spec.get("dtype", "float32"))
        x = np.asarray(x)
        if x.dtype != dtype:
            if not np.can_cast(x.dtype, dtype, casting="same_kind"):
                raise DataError(f"input {spec['name']!r} has dtype {x.dtype} but the artifact "
                                f"expects {dtype}")
            x = x.astype(dtype)
        x = np.ascontiguousarray(x)
        if not _fits(x.shape, list(spec["shape"])):
            raise DataError(
                f"input {spec['name']!r} of shape {tuple(x.shape)} does not fit the artifact's "
                f"input {_shape_text(list(spec['shape']))}"
            )
        return x

    def feed(self, x) -> dict[str, np.ndarray]:
        """The checked session feed for ``x`` (a dict by input name, or one array)."""
        names = [i["name"] for i in self.inputs]
        if not isinstance(x, dict):
            if len(names) != 1:
                raise DataError(f"this artifact has {len(names)} inputs ({', '.join(names)}): "
                                f"pass a dict by input name")
            x = {names[0]: x}
        unknown = [k for k in x if k not in names and k not in self.bound]
        if unknown:
            raise DataError(f"unknown input {unknown[0]!r} (the artifact's inputs: "
                            f"{', '.join(names)})")
        missing = [n for n in names if n not in x]
        if missing:
            raise DataError(f"missing input {missing[0]!r} (the artifact's inputs: "
                            f"{', '.join(names)})")
        for name, value in self.bound.items():
            if name in x and not np.array_equal(np.asarray(x[name]), value):
                raise DataError(f"input {name!r} was bound to {value.tolist()} when the artifact "
                                f"was compiled; got {np.asarray(x[name]).tolist()}")
        return {i["name"]: self._check(x[i["name"]], i) for i in self.inputs}

    def _result(self, names: list[str], values: list[np.ndarray]):
        return values[0] if len(values) == 1 else dict(zip(names, values))

    def run(self, x):
        raise NotImplementedError

    # ------------------------------------------------------------------ preprocessing

    def _preprocess_one(self, raw: np.ndarray, spec: dict) -> np.ndarray:
        p = self.manifest.get("preprocessing") or {}
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == len(spec["shape"]) - 1:
            x = x[None]
        x = x * np.float32(p.get("scale", 1.0))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if p.get("mean") is not None:
            x = x - np.asarray(p["mean"], np.float32).reshape(shape)
        if p.get("std") is not None:
            x = x / np.asarray(p["std"], np.float32).reshape(shape)
        return x

    def preprocess(self, raw):
        """The manifest's preprocessing: for a single-input image artifact every array; for
        a dict, only the uint8 image inputs (ids, masks, state and scalars pass as they are)."""
        if not isinstance(raw, dict):
            return self._preprocess_one(raw, self.inputs[0])
        specs = {i["name"]: i for i in self.inputs}
        return {k: self._preprocess_one(v, specs[k])
                if k in specs and np.asarray(v).dtype == np.uint8 and np.asarray(v).ndim >= 3
                else v for k, v in raw.items()}

    @property
    def text(self) -> dict | None:
        """The manifest's ``text`` section (tokenizer file, max_length, padding, task)."""
        return self.manifest.get("text")

    def tokenize(self, texts) -> dict[str, np.ndarray]:
        """Token-id feeds for ``texts`` with the artifact's own tokenizer."""
        if self.text is None:
            raise DataError(f"{self.path} is not a text artifact: predict takes arrays")
        if self._tokenizer is None:
            t = self.text
            self._tokenizer = TextTokenizer(
                self.path / t["tokenizer"], max_length=t["max_length"],
                inputs=[i["name"] for i in self.inputs], padding=t.get("padding", "max_length"))
        return self._tokenizer(texts)

    def predict(self, raw):
        """Raw data in: for a text artifact a list of strings (embeddings or logits out);
        otherwise arrays, the manifest's preprocessing applied first."""
        if self.text is not None:
            return self.run(self.tokenize(raw))
        return self.run(self.preprocess(raw))

    def __call__(self, x):
        return self.run(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, backend={self.backend})"
