"""The default ``--task`` for a model, guessed from its declared outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.evaluate.detection import looks_like_yolo
from edgeopt.evaluate.fidelity import is_classifier_output

TASKS = ("classification", "detection", "generic")


def default_task(outputs: Sequence[Any]) -> str:
    """``classification`` for one ``(N, C)`` float output, ``detection`` for one
    YOLO-shaped float output, else ``generic`` (fidelity to the reference only).

    ``outputs`` are ``TensorInfo``-like: ``.dtype`` (numpy name) and ``.shape``.
    Only a single output is guessed: a second output (a segmentation head's
    prototypes, an LSTM's state) means the layout is something this guess
    cannot vouch for.
    """
    if len(outputs) != 1 or np.dtype(outputs[0].dtype).kind != "f":
        return "generic"
    shape = list(outputs[0].shape)
    if is_classifier_output(shape):
        return "classification"
    if looks_like_yolo(shape):
        return "detection"
    return "generic"
