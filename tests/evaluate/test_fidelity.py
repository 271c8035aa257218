import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeopt.core.errors import DataError
from edgeopt.core.inputs import TensorSpec
from edgeopt.evaluate.fidelity import (
    SQNR_CAP_DB,
    Accumulator,
    compare,
    is_classifier_output,
    summarise,
)
from edgeopt.evaluate.task import default_task


def test_sqnr_of_a_known_noise_power():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((64, 256))  # signal power ~1
    for noise_db in (10.0, 20.0, 40.0):
        noise = rng.standard_normal(ref.shape)
        # Scale the noise to exactly signal / 10^(dB/10) so the expected value is exact.
        noise *= math.sqrt(np.sum(ref**2) / np.sum(noise**2) / 10 ** (noise_db / 10))
        m = compare({"out": ref}, {"out": ref + noise})["out"]
        assert m["sqnr_db"] == pytest.approx(noise_db, abs=0.1)
        assert m["max_abs"] == pytest.approx(np.abs(noise).max())
        assert m["samples"] == 64


def test_cosine_of_orthogonal_and_opposite_samples():
    ref = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    cand = np.array([[0.0, 3.0], [-2.0, -2.0], [0.0, 0.0]])
    m = compare({"o": ref}, {"o": cand})["o"]
    # Per sample: orthogonal 0, opposite -1, two zero vectors agree (1).
    assert m["cosine"] == pytest.approx((0.0 - 1.0 + 1.0) / 3)
    assert m["cosine_min"] == pytest.approx(-1.0)


def test_argmax_agreement_of_a_known_permutation():
    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    # Swap classes 0 and 1: the 4 rows predicting 0 or 1 now disagree.
    swapped = logits[:, [1, 0, 2, 3]]
    m = compare({"logits": logits}, {"logits": swapped})["logits"]
    assert m["argmax_agreement"] == pytest.approx(50.0)
    assert "argmax_agreement" not in compare({"a": logits[:, :1]}, {"a": logits[:, :1]})["a"]


def test_integer_outputs_count_exact_matches():
    ref = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64)
    cand = ref.copy()
    cand[1, 3] = 0
    m = compare({"ids": ref}, {"ids": cand})["ids"]
    assert m == {"exact_match": pytest.approx(87.5), "samples": 2}
    assert compare({"b": ref > 2}, {"b": ref > 2})["b"]["exact_match"] == 100.0


def test_identical_and_nonfinite_outputs_stay_json_safe():
    ref = np.array([[1.0, -np.inf, 2.0], [3.0, 4.0, 5.0]], dtype=np.float32)
    same = compare({"o": ref}, {"o": ref.copy()})["o"]
    # An -inf both models give (a masked logit) is agreement, not error.
    assert same["sqnr_db"] == SQNR_CAP_DB and same["max_abs"] == 0.0 and same["nonfinite"] == 0
    broken = ref.copy()
    broken[1, 1] = np.nan
    bad = compare({"o": ref}, {"o": broken})["o"]
    assert bad["nonfinite"] == 1 and bad["sqnr_db"] == -SQNR_CAP_DB and bad["max_abs"] is None
    assert bad["cosine_min"] == 0.0 and bad["cosine"] == pytest.approx(0.5)
    text = json.dumps({"same": same, "bad": bad}, allow_nan=False)  # strict JSON
    assert "200.0" in text
    zero = compare({"o": np.zeros((2, 3))}, {"o": np.ones((2, 3))})["o"]
    assert zero["sqnr_db"] == -SQNR_CAP_DB and zero["cosine"] == 0.0


def test_accumulating_batches_equals_one_compare():
    rng = np.random.default_rng(1)
    ref = {"logits": rng.standard_normal((10, 5)), "ids": rng.integers(0, 3, (10, 2))}
    cand = {
        "logits": ref["logits"] + 0.3 * rng.standard_normal((10, 5)),
        "ids": rng.integers(0, 3, (10, 2)),
    }
    acc = Accumulator()
    for start, stop in ((0, 3), (3, 7), (7, 10)):
        acc.add(
            {k: v[start:stop] for k, v in ref.items()},
            {k: v[start:stop] for k, v in cand.items()},
        )
    whole, batched = compare(ref, cand), acc.result()
    for name in whole:
        for key, value in whole[name].items():
            assert batched[name][key] == pytest.approx(value), (name, key)


def test_summarise_reports_the_worst_output():
    per_output = {
        "a": {"sqnr_db": 30.0, "cosine_min": 0.99, "argmax_agreement": 90.0, "nonfinite": 0},
        "b": {"sqnr_db": 12.5, "cosine_min": 0.9, "nonfinite": 2},
        "c": {"exact_match": 75.0},
    }
    assert summarise(per_output) == {
        "sqnr_db_min": 12.5,
        "worst_output": "b",
        "cosine_min": 0.9,
        "argmax_agreement_min": 90.0,
        "exact_match_min": 75.0,
        "nonfinite": 2,
    }


def test_mismatched_outputs_are_one_line():
    with pytest.raises(DataError, match="output 'o': reference has shape \\(2, 3\\)"):
        compare({"o": np.zeros((2, 3))}, {"o": np.zeros((3, 2))})
    with pytest.raises(DataError, match="missing 'p'"):
        compare({"o": np.zeros(2), "p": np.zeros(2)}, {"o": np.zeros(2)})


def test_classifier_shapes_and_default_task():
    assert is_classifier_output(["N", 10]) and is_classifier_output((4, 2))
    assert not is_classifier_output(["N", 1]) and not is_classifier_output(["N", "C"])
    assert not is_classifier_output([4, 10, 2])

    def task(*shapes, dtype="float32"):
        return default_task([TensorSpec(f"o{i}", dtype, list(s)) for i, s in enumerate(shapes)])

    assert task(["N", 1000]) == "classification"
    assert task(["N", 84, 8400]) == "detection"
    assert task([1, 8400, 84]) == "generic"  # anchors-first heads may carry objectness
    assert task(["N", 10], dtype="int64") == "generic"
    assert task(["N", 10], ["N", 4]) == "generic"
    assert task(["N", "T", 512]) == "generic"


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 6)),
        elements=st.floats(-1e3, 1e3, width=32),
    )
)
def test_compare_with_itself_is_perfect(ref):
    m = compare({"o": ref}, {"o": ref.copy()})["o"]
    assert m["max_abs"] == 0.0 and m["sqnr_db"] == SQNR_CAP_DB
    assert m["cosine"] == pytest.approx(1.0) and m["cosine_min"] == pytest.approx(1.0)
    if ref.shape[1] >= 2:
        assert m["argmax_agreement"] == 100.0
