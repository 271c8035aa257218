"""What a training run is asked to do (``TrainOptions``) and what it did (``TrainResult``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from edgeopt.core.config import Config, enum_field
from edgeopt.core.errors import ConfigError


class OptimizerKind(str, Enum):
    ADAMW = "adamw"
    SGD = "sgd"  # nesterov momentum 0.9


class Schedule(str, Enum):
    COSINE = "cosine"  # linear warmup, then cosine decay to zero
    ONECYCLE = "onecycle"  # cosine warmup to the peak, cosine decay (torch's OneCycleLR shape)
    CONSTANT = "constant"  # linear warmup, then flat


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Config):
    """How long and how to train. The budget ends at whichever limit comes first;
    one of ``steps``, ``epochs``, ``max_seconds`` is needed unless ``default_epochs`` is set."""

    default_epochs: ClassVar[float | None] = None

    steps: int | None = None
    epochs: float | None = None
    max_seconds: float | None = None  # this run's wall-clock cap; a resumed run gets it afresh
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0  # applied to parameters with ndim > 1 only
    optimizer: OptimizerKind = OptimizerKind.ADAMW
    schedule: Schedule = Schedule.COSINE
    warmup: float = 0.05  # fraction of the budget
    shift: int = 0  # augmentation: random translation in pixels (4-D inputs)
    hflip: bool = False  # right for clothing, wrong for digits: off unless asked for
    seed: int = 0
    checkpoint: str | None = None  # file to write checkpoints to
    checkpoint_every: int = 200  # steps; a checkpoint is also written when training stops
    resume: bool = False  # continue from ``checkpoint`` when the file exists

    def __post_init__(self) -> None:
        for name, enum_type in (("optimizer", OptimizerKind), ("schedule", Schedule)):
            enum_field(self, name, enum_type, name)
        if self.steps is None and self.epochs is None and self.max_seconds is None:
            if self.default_epochs is None:
                raise ConfigError("a training budget is required: set steps, epochs or max_seconds")
            object.__setattr__(self, "epochs", self.default_epochs)
        for name in ("steps", "epochs", "max_seconds", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name in ("batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.shift < 0:
            raise ConfigError(f"shift must be >= 0, got {self.shift}")
        if self.resume and not self.checkpoint:
            raise ConfigError("resume needs a checkpoint path")


@dataclass
class TrainResult:
    steps: int  # the step count reached (including steps done before a resume)
    final_loss: float | None  # mean loss over the last (up to) 20 steps of this run
    seconds: float  # wall-clock seconds of this run
    resumed_from: int | None  # the checkpoint's step, or None
    stopped_by: str  # "steps", "epochs", "time" or "checkpoint" (resumed a finished run)
    losses: list[float]  # every step's loss in this run

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "final_loss": self.final_loss,
                "seconds": round(self.seconds, 2), "resumed_from": self.resumed_from,
                "stopped_by": self.stopped_by}
