"""Predictor for ONNX Runtime artifacts (numpy + onnxruntime only)."""

from __future__ import annotations

import contextlib
import io

import onnxruntime as ort

from edgeopt.core.errors import ArtifactError, first_line
from edgeopt.core.ort_options import session_options
from edgeopt.runtime.predictor import Predictor


def make_session(model: str | bytes, threads: int | None = None, *,
                 exact_int8: bool = True) -> ort.InferenceSession:
    opts = session_options(threads, exact_int8=exact_int8)
    # A model ORT cannot load (ValueError, RuntimeError) makes it print four "EP Error ...
    # Falling back" lines to stdout and retry on the same CPU provider; the caller's error
    # says it in one line instead.
    with contextlib.redirect_stdout(io.StringIO()):
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class OrtPredictor(Predictor):
    backend = "onnxruntime"

    def __init__(self, path, manifest, *, threads=None):
        super().__init__(path, manifest, threads=threads)
        model = self.path / manifest["model_file"]
        try:
            self.session = make_session(str(model), threads)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types
            # The checksum matched, so the file is what was written: a broken build or a
            # hand-edited manifest (whose checksums it edited too).
            raise ArtifactError(f"{model} cannot be loaded by onnxruntime: "
                                f"{first_line(exc)}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_name = self.output_names[0]

    def run(self, x):
        """One array for a single-output model, else a dict by output name."""
        return self._result(self.output_names, self.session.run(self.output_names, self.feed(x)))


PREDICTOR = OrtPredictor
