import numpy as np
import pytest
import torch

from edgeopt.core.errors import DataError
from edgeopt.evaluate import as_numpy_fn, describe, evaluate

N, CLASSES = 50, 7
RAW = np.random.default_rng(0).integers(0, 256, size=(N, 3, 2, 2), dtype=np.uint8)
LABELS = np.random.default_rng(1).integers(0, CLASSES, size=N)


def preprocess(raw):
    return raw.astype(np.float32) / 255.0


def make_model():
    torch.manual_seed(0)
    # Dropout makes a model left in train mode give different answers each run.
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(12, CLASSES)
    ).train()


def manual_logits(model):
    linear = model[2]
    w = linear.weight.detach().numpy()
    b = linear.bias.detach().numpy()
    return preprocess(RAW).reshape(N, -1) @ w.T + b


def manual_topk(logits, k):
    top = np.argsort(-logits, axis=1)[:, :k]
    return 100.0 * np.mean([label in row for row, label in zip(top, LABELS)])


def test_torch_module_matches_numpy():
    model = make_model()
    expected = manual_logits(model)
    # batch 16 does not divide 50, so the last short batch is exercised too.
    result = evaluate(model, RAW, LABELS, preprocess=preprocess, batch_size=16, progress=False)

    assert not model.training
    assert result.n == N
    assert result.logits.dtype == np.float32
    assert result.logits.shape == (N, CLASSES)
    np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-5)
    assert result.top1 == pytest.approx(100.0 * np.mean(expected.argmax(1) == LABELS))
    assert result.top5 == pytest.approx(manual_topk(expected, 5))
    assert result.agreement is None
    assert describe(model) == "torch"


class FakePredictor:
    backend = "onnxruntime"

    def __init__(self, fn):
        self.fn = fn
        self.batches = []

    def run(self, x):
        self.batches.append(x.shape[0])
        return self.fn(x)


def test_callable_and_predictor_agree_with_torch():
    model = make_model()
    reference = evaluate(model, RAW, LABELS, preprocess=preprocess, progress=False)
    w = model[2].weight.detach().numpy()
    b = model[2].bias.detach().numpy()

    def numpy_model(x):
        return x.reshape(len(x), -1) @ w.T + b

    predictor = FakePredictor(numpy_model)
    for runnable in (numpy_model, predictor):
        result = evaluate(
            runnable,
            RAW,
            LABELS,
            preprocess=preprocess,
            reference_logits=reference.logits,
            batch_size=20,
            progress=False,
        )
        assert result.top1 == pytest.approx(reference.top1)
        assert result.top5 == pytest.approx(reference.top5)
        assert result.agreement == 100.0
    assert predictor.batches == [20, 20, 10]
    assert describe(predictor) == "onnxruntime"
    assert describe(numpy_model) == "callable"


def test_agreement_counts_changed_predictions():
    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    flipped = logits.copy()
    flipped[:2] = flipped[:2, ::-1]  # samples 0 and 1 now predict 3 and 2
    result = evaluate(lambda x: x, flipped, labels, reference_logits=logits, progress=False)
    assert result.top1 == 75.0
    assert result.agreement == 75.0
    assert result.top5 is None  # only 4 classes
    assert result.to_dict() == {"n": 8, "top1": 75.0, "top5": None, "agreement": 75.0}


def test_progress_bar_does_not_change_results():
    logits = np.eye(3, dtype=np.float32)
    result = evaluate(lambda x: x, logits, np.arange(3), progress=True, desc="fp32")
    assert result.top1 == 100.0


def test_bad_inputs_fail_with_one_line():
    with pytest.raises(DataError, match="labels of shape"):
        evaluate(lambda x: x, np.zeros((4, 3)), np.zeros(3), progress=False)
    with pytest.raises(DataError, match="model returned shape"):
        evaluate(lambda x: x[:, 0], np.zeros((4, 3)), np.zeros(4), progress=False)
    with pytest.raises(TypeError, match="cannot evaluate a int"):
        as_numpy_fn(42)
