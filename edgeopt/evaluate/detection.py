"""YOLO decode, NMS and box agreement: judging a detector without labelled boxes.

The reference model's detections stand in for ground truth, so a compressed
detector is scored by how many of its boxes the original would also have drawn.
Decoding follows the Ultralytics v8 head: ``(N, 4 + C, anchors)`` with
``cx, cy, w, h`` then one score per class, no objectness. (v5-style heads,
``(N, anchors, 5 + C)`` with objectness, are a different layout and are not
decoded here.) Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeopt.core.errors import DataError

MAX_NMS = 30_000  # boxes entering NMS per image, highest scores first (as Ultralytics)


@dataclass
class Detections:
    """One image's boxes (``K, 4`` xyxy), scores (``K``) and class ids (``K``)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def looks_like_yolo(shape: Sequence[int | str | None]) -> bool:
    """``(N, 4 + C, A)`` with known sizes and more anchors than channels."""
    if len(shape) != 3:
        return False
    channels, anchors = shape[1], shape[2]
    if not all(isinstance(d, (int, np.integer)) for d in (channels, anchors)):
        return False
    return channels >= 5 and anchors > channels


def decode_yolo(
    output: np.ndarray, *, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
) -> list[Detections]:
    """Boxes per image after a confidence cut and class-aware NMS.

    Accepts ``(N, 4 + C, A)`` or ``(N, A, 4 + C)``; the smaller of the two last
    axes is taken as the channels, since a head has far more anchors than classes.
    """
    output = np.asarray(output)
    if output.ndim != 3 or min(output.shape[1:]) < 5:
        raise DataError(
            f"expected a YOLO output of shape (N, 4 + classes, anchors), got {output.shape}"
        )
    if output.shape[1] > output.shape[2]:
        output = output.transpose(0, 2, 1)
    results = []
    for image in output.astype(np.float32, copy=False):
        cxcywh, class_scores = image[:4].T, image[4:].T  # (A, 4), (A, C)
        classes = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(classes)), classes]
        keep = np.flatnonzero(scores > conf)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:MAX_NMS]
        boxes = _xyxy(cxcywh[keep])
        kept = nms(boxes, scores[keep], classes[keep], iou=iou)[:max_det]
        results.append(
            Detections(boxes[kept], scores[keep][kept], classes[keep][kept].astype(np.int64))
        )
    return results


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *, iou: float) -> np.ndarray:
    """Indices kept by class-aware greedy NMS, highest score first.

    A box is dropped when its IoU with a kept box of the same class exceeds ``iou``.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    # Shift each class to its own region so one pass never compares across classes.
    offset = classes.astype(np.float64)[:, None] * (float(np.abs(boxes).max()) * 2 + 1)
    shifted = boxes.astype(np.float64) + offset
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        order = rest[box_iou(shifted[best : best + 1], shifted[rest])[0] <= iou]
    return np.asarray(kept, dtype=np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: ``(len(a), len(b))``; empty boxes have IoU 0."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_agreement(
    reference: list[Detections], candidate: list[Detections], *, iou: float = 0.5
) -> dict:
    """Precision, recall and F1 (fractions 0..1) of candidate boxes against reference ones.

    Candidate boxes, highest score first, each match the best unmatched reference
    box of the same class with IoU >= ``iou``. With nothing to count, a ratio is
    1.0 when the other side is empty too (both agree there is nothing) and 0.0 else.
    """
    if len(reference) != len(candidate):
        raise DataError(
            f"box agreement needs one result per image: {len(reference)} reference, "
            f"{len(candidate)} candidate"
        )
    matched = sum(_matches(r, c, iou) for r, c in zip(reference, candidate))
    n_ref = sum(len(r) for r in reference)
    n_cand = sum(len(c) for c in candidate)
    precision = matched / n_cand if n_cand else float(n_ref == 0)
    recall = matched / n_ref if n_ref else float(n_cand == 0)
    total = precision + recall
    f1 = 2 * precision * recall / total if total else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_ref": n_ref, "n_cand": n_cand}


def _matches(ref: Detections, cand: Detections, iou: float) -> int:
    if len(ref) == 0 or len(cand) == 0:
        return 0
    overlaps = box_iou(np.asarray(cand.boxes, np.float64), np.asarray(ref.boxes, np.float64))
    overlaps[np.asarray(cand.classes)[:, None] != np.asarray(ref.classes)[None, :]] = -1.0
    free = np.ones(len(ref), dtype=bool)
    count = 0
    for i in np.argsort(-np.asarray(cand.scores), kind="stable"):
        row = np.where(free, overlaps[i], -1.0)
        j = int(row.argmax())
        if row[j] >= iou:
            free[j] = False
            count += 1
    return count


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    centre, half = cxcywh[:, :2], cxcywh[:, 2:] / 2
    return np.concatenate([centre - half, centre + half], axis=1)
