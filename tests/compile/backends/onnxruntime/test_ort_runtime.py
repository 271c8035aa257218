"""ONNX Runtime's runtime.py: the session it opens, and its Predictor for an artifact."""

import numpy as np
import torch

import edgeopt
from edgeopt.compile.backends.onnxruntime.runtime import OrtPredictor, make_session


def test_threads_set_the_intra_op_pool(tmp_path, tiny_cnn):
    art = edgeopt.compile(tiny_cnn, input_shape=[1, 8, 8], out=tmp_path / "a")
    options = make_session(str(art.path / "model.onnx"), threads=2).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_predictor_runs_the_artifact_like_the_model(tmp_path, tiny_cnn):
    art = edgeopt.compile(tiny_cnn, input_shape=[1, 8, 8], out=tmp_path / "a")
    predictor = art.load(threads=1)
    assert isinstance(predictor, OrtPredictor) and predictor.backend == "onnxruntime"
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tiny_cnn(x).numpy()
    np.testing.assert_allclose(predictor.run(x.numpy()), want, rtol=1e-4, atol=1e-5)
