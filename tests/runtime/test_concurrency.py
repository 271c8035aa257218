"""One Predictor shared by 8 threads gives, call for call, the outputs of serial calls
(docs/deploying.md, "Threads"): ONNX Runtime sessions run concurrently, a TVM VM is
called under the predictor's lock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgeopt
from edgeopt.runtime import load

INPUT_SHAPE = [1, 8, 8]
CALLS = 48


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # Different batch sizes too: a shared buffer sized by one call would break another.
    return [rng.standard_normal((1 + i % 5, *INPUT_SHAPE)).astype(np.float32)
            for i in range(CALLS)]


def _check_threads_match_serial(pred) -> None:
    xs = _inputs()
    serial = [pred.run(x) for x in xs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):  # several rounds: an interleaving bug need not show at once
            threaded = list(pool.map(pred.run, xs))
            for a, b in zip(serial, threaded):
                np.testing.assert_array_equal(a, b)
    assert len({float(s.sum()) for s in serial}) > CALLS // 2  # the calls really differ


def test_an_onnxruntime_predictor_is_thread_safe(tmp_path, make_cnn):
    art = edgeopt.compile(make_cnn(), target="x86_64", input_shape=INPUT_SHAPE,
                          out=tmp_path / "ort")
    _check_threads_match_serial(load(art.path, threads=1))


def test_a_tvm_predictor_is_thread_safe(tmp_path, make_cnn):
    pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")
    art = edgeopt.compile(make_cnn(), target="x86_64", backend="tvm", input_shape=INPUT_SHAPE,
                          out=tmp_path / "tvm")
    pred = load(art.path, threads=1)
    assert pred.backend == "tvm"
    _check_threads_match_serial(pred)
