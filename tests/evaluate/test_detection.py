import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.core.errors import DataError
from edgeopt.evaluate.detection import (
    Detections,
    box_agreement,
    box_iou,
    decode_yolo,
    looks_like_yolo,
    nms,
)


def yolo_tensor(anchors, num_classes=3, n_anchors=20):
    """(1, 4 + C, A): each (cx, cy, w, h, class, score) in ``anchors``; the rest score 0."""
    out = np.zeros((1, 4 + num_classes, n_anchors), dtype=np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + cls, a] = score
        out[0, 4 + (cls + 1) % num_classes, a] = score / 2  # a weaker second class
    return out


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10]], dtype=np.float64)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 8]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0, 0.0]])


def test_nms_keeps_the_best_of_each_overlapping_group_per_class():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best of the cluster
            [1, 1, 11, 11],  # 1: IoU 0.68 with 0, same class: dropped
            [0, 0, 10, 10],  # 2: same place, other class: kept
            [6, 0, 16, 10],  # 3: IoU 0.25 with 0: kept
            [50, 50, 60, 60],  # 4: alone
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    classes = np.array([0, 0, 1, 0, 0])
    np.testing.assert_array_equal(nms(boxes, scores, classes, iou=0.45), [0, 2, 3, 4])
    np.testing.assert_array_equal(nms(boxes, scores, classes, iou=0.2), [0, 2, 4])
    assert nms(boxes[:0], scores[:0], classes[:0], iou=0.5).shape == (0,)


def test_decode_a_hand_built_yolo_tensor():
    out = yolo_tensor(
        [
            (50, 50, 20, 20, 2, 0.9),
            (51, 51, 20, 20, 2, 0.8),  # duplicate of the first: suppressed
            (50, 50, 20, 20, 0, 0.7),  # same box, other class: kept
            (10, 10, 4, 4, 1, 0.2),  # below conf
        ]
    )
    (det,) = decode_yolo(out, conf=0.25, iou=0.45)
    np.testing.assert_allclose(det.boxes, [[40, 40, 60, 60], [40, 40, 60, 60]])
    np.testing.assert_allclose(det.scores, [0.9, 0.7])
    np.testing.assert_array_equal(det.classes, [2, 0])
    # Anchors-first layout decodes the same, and max_det keeps the best.
    (same,) = decode_yolo(out.transpose(0, 2, 1), conf=0.25, iou=0.45, max_det=1)
    np.testing.assert_array_equal(same.classes, [2])
    with pytest.raises(DataError, match="YOLO output"):
        decode_yolo(np.zeros((1, 4, 10)))


def dets(boxes, classes, scores=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.linspace(0.9, 0.5, len(boxes)) if scores is None else np.asarray(scores)
    return Detections(boxes, scores, np.asarray(classes, dtype=np.int64))


def test_box_agreement():
    ref = [dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1]), dets([[5, 5, 9, 9]], [3])]
    same = box_agreement(ref, ref)
    assert (same["precision"], same["recall"], same["f1"]) == (1.0, 1.0, 1.0)
    assert (same["n_ref"], same["n_cand"]) == (3, 3)
    # Shifted by 6 of 10 pixels: IoU 4/16 = 0.25 < 0.5 on every box.
    shifted = [dets(d.boxes + 6, d.classes) for d in ref]
    assert box_agreement(ref, shifted)["recall"] == 0.0
    # Right boxes, one with the wrong class, plus an extra: 2 of 3 found, 2 of 4 right.
    cand = [dets([[0, 0, 10, 10], [20, 20, 30, 30], [70, 70, 80, 80]], [0, 2, 0]), ref[1]]
    m = box_agreement(ref, cand)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    empty = [dets([], [])]
    assert box_agreement(empty, empty)["f1"] == 1.0
    assert box_agreement(ref[:1], empty) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "n_ref": 2,
        "n_cand": 0,
    }
    with pytest.raises(DataError, match="one result per image"):
        box_agreement(ref, ref[:1])


def test_one_candidate_matches_one_reference_box():
    ref = [dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0])]
    cand = [dets([[0, 0, 10, 10]], [0])]
    m = box_agreement(ref, cand)
    assert (m["precision"], m["recall"]) == (1.0, 0.5)


def test_looks_like_yolo():
    assert looks_like_yolo([1, 84, 8400]) and looks_like_yolo(["N", 6, 100])
    assert not looks_like_yolo([1, 8400, 84]) and not looks_like_yolo(["N", 84, "A"])
    assert not looks_like_yolo([1, 4, 100]) and not looks_like_yolo([1, 1000])


box = st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(1, 40), st.floats(1, 40)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(box, st.floats(0.01, 1.0), st.integers(0, 2)), min_size=1, max_size=30),
    st.floats(0.1, 0.9),
)
def test_nms_leaves_no_same_class_overlap_above_the_threshold(items, threshold):
    boxes = np.array([b for b, _, _ in items], dtype=np.float64)
    scores = np.array([s for _, s, _ in items])
    classes = np.array([c for _, _, c in items])
    kept = nms(boxes, scores, classes, iou=threshold)
    overlaps = box_iou(boxes[kept], boxes[kept])
    same_class = classes[kept][:, None] == classes[kept][None, :]
    np.fill_diagonal(same_class, False)
    assert (overlaps[same_class] <= threshold + 1e-9).all()
    # Every dropped box overlaps a kept, higher-scored box of its class.
    for i in set(range(len(boxes))) - set(kept.tolist()):
        rivals = kept[(classes[kept] == classes[i]) & (scores[kept] >= scores[i])]
        assert (box_iou(boxes[i : i + 1], boxes[rivals]) > threshold).any()
