"""Training data for the loop (``core.train``): inputs, labels, and their augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeopt.core.errors import DataError


@dataclass
class TrainData:
    """Preprocessed float inputs ``x`` (N first, the model's layout) and int labels ``y``.

    ``y`` may be None for losses that need no labels (distillation from a
    teacher's logits); ``labels()`` raises a one-line ``DataError`` then.
    """

    x: np.ndarray | torch.Tensor
    y: np.ndarray | torch.Tensor | None = None

    def __post_init__(self) -> None:
        x = self.x
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not isinstance(x, torch.Tensor):
            raise DataError(f"training inputs must be an array, got {type(self.x).__name__}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise DataError(f"training inputs must be a non-empty N-first batch, got {tuple(x.shape)}")
        self.x = x.float()
        if self.y is not None:
            y = torch.as_tensor(np.asarray(self.y) if not isinstance(self.y, torch.Tensor)
                                else self.y)
            if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
                raise DataError(f"training labels must be 1-D integers, got {y.dtype} "
                                f"of shape {tuple(y.shape)}")
            if len(y) != len(self.x):
                raise DataError(f"{len(self.x)} training samples but {len(y)} labels")
            self.y = y.long()

    def __len__(self) -> int:
        return len(self.x)

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def labels(self) -> torch.Tensor:
        if self.y is None:
            raise DataError("training data has no labels (TrainData.y is None)")
        return self.y


def as_train_data(data: Any, step: str) -> TrainData | None:
    """The pipeline passes ``TrainData``; a direct caller may pass preprocessed inputs
    (numpy or torch), which are unlabelled data (distillation, steps that need no labels).
    None stays None; anything else is a one-line ``DataError`` naming ``step``."""
    if data is None or isinstance(data, TrainData):
        return data
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return TrainData(x=data)
    raise DataError(f"{step}: data must be TrainData or an input array, got {type(data).__name__}")


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, hflip: bool) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding) and optional horizontal
    flip, per sample: the reference models' training augmentation (zoo/train.py)."""
    if x.dim() != 4 or not (shift or hflip):
        return x
    n, c, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[
            torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
        ]
    if hflip:
        flip = (torch.rand(n, generator=gen) < 0.5)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x
