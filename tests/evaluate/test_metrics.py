import numpy as np
import pytest

from edgeopt.core.errors import DataError
from edgeopt.evaluate import agreement, topk_accuracy

# Four samples, five classes; the ranking of each row is written next to it.
LOGITS = np.array(
    [
        [0.1, 0.9, 0.3, 0.0, 0.2],  # 1 > 2 > 4 > 0 > 3
        [2.0, 1.0, 3.0, 0.5, 0.0],  # 2 > 0 > 1 > 3 > 4
        [0.0, 0.0, 0.1, 0.4, 0.3],  # 3 > 4 > 2 > 0,1
        [5.0, 4.0, 3.0, 2.0, 1.0],  # 0 > 1 > 2 > 3 > 4
    ],
    dtype=np.float32,
)
LABELS = np.array([1, 0, 2, 4])  # label ranks: 1st, 2nd, 3rd, 5th


@pytest.mark.parametrize(
    ("k", "expected"), [(1, 25.0), (2, 50.0), (3, 75.0), (4, 75.0), (5, 100.0)]
)
def test_topk_counts_label_rank(k, expected):
    assert topk_accuracy(LOGITS, LABELS, k) == pytest.approx(expected)


def test_ties_go_to_lower_class_like_argmax():
    tied = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert topk_accuracy(tied, np.array([0, 1]), 1) == 100.0
    assert topk_accuracy(tied, np.array([1, 2]), 1) == 0.0
    # top-2 of row 0 is {0, 1}; class 2 is outside it despite the tie elsewhere.
    assert topk_accuracy(tied, np.array([2, 2]), 2) == 50.0


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="k=6"):
        topk_accuracy(LOGITS, LABELS, 6)
    with pytest.raises(DataError, match="3 labels for 4 predictions"):
        topk_accuracy(LOGITS, LABELS[:3], 1)
    with pytest.raises(DataError):
        topk_accuracy(LOGITS[0], LABELS, 1)


def test_agreement_accepts_logits_or_class_ids():
    assert agreement(LOGITS, np.array([1, 2, 3, 0])) == 100.0
    assert agreement(LOGITS, np.array([1, 2, 0, 0])) == 75.0
    other = LOGITS.copy()
    other[0] = [1, 0, 0, 0, 0]  # top-1 changes from 1 to 0
    assert agreement(LOGITS, other) == 75.0
    assert agreement(np.array([0, 1]), np.array([1, 0])) == 0.0


def test_agreement_rejects_mismatched_lengths():
    with pytest.raises(DataError, match="4 predictions with 3"):
        agreement(LOGITS, LABELS[:3])
