"""The Predictor interface every backend's runtime implements (numpy in, numpy out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import DataError


class Predictor:
    """Runs a loaded artifact. ``run`` takes preprocessed float arrays (NCHW);
    ``predict`` takes raw data and applies the manifest's preprocessing first."""

    backend: str = "?"

    def __init__(self, path: Path, manifest: dict[str, Any], *, threads: int | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.threads = threads
        self.input_name = manifest["inputs"][0]["name"]
        self.input_shape = manifest["inputs"][0]["shape"]  # ["N", C, H, W]

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        want = [d for d in self.input_shape[1:]]
        if x.ndim != len(self.input_shape) or list(x.shape[1:]) != want:
            raise DataError(
                f"input shape {tuple(x.shape)} does not fit the artifact's input "
                f"(N, {', '.join(map(str, want))})"
            )
        return x

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        p = self.manifest.get("preprocessing") or {}
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == len(self.input_shape) - 1:
            x = x[None]
        x = x * np.float32(p.get("scale", 1.0))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if p.get("mean") is not None:
            x = x - np.asarray(p["mean"], np.float32).reshape(shape)
        if p.get("std") is not None:
            x = x / np.asarray(p["std"], np.float32).reshape(shape)
        return x

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return self.run(self.preprocess(raw))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, backend={self.backend})"
