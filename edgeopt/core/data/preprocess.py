"""``Preprocess``: raw samples to the float32 tensors a model sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeopt.core.config import Config
from edgeopt.core.errors import ConfigError, DataError


@dataclass(frozen=True, kw_only=True)
class Preprocess(Config):
    """``(raw * scale - mean) / std`` per channel, as float32 in ``layout``.

    Input is always raw ``N,C,H,W``; ``layout="NHWC"`` only changes the output.
    """

    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        # YAML gives lists; keep tuples so the config stays hashable and frozen.
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if not self.scale > 0:
            raise ConfigError(f"Preprocess.scale must be > 0, got {self.scale!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"Preprocess.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"Preprocess.std must be > 0 per channel, got {self.std!r}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError(
                f"Preprocess: mean has {len(self.mean)} values but std has {len(self.std)}"
            )

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw)
        if raw.ndim != 4:
            raise DataError(f"preprocess expects raw samples of shape N,C,H,W, got {raw.shape}")
        channels = raw.shape[1]
        x = raw.astype(np.float32) * np.float32(self.scale)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != channels:
                raise DataError(
                    f"preprocess {name} has {len(values)} values but the data has "
                    f"{channels} channels (shape {raw.shape})"
                )
            per_channel = np.asarray(values, dtype=np.float32).reshape(1, channels, 1, 1)
            x = x - per_channel if name == "mean" else x / per_channel
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.float32)
