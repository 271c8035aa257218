"""The step contract: what a recipe step asks for, is given, and gives back.

A technique is a ``StepConfig`` dataclass and one handler registered for it
(``core.registry.register(Config, step="name")``)::

    def handler(model, config, ctx: StepContext) -> StepResult: ...

The config declares the data it needs (``data_need``) and the run-level
options it takes (``overridable``/``override``); the pipeline builds the
``StepContext`` from that, and reports the ``StepRecord`` through its hooks
(``summary``, ``report_lines``, ``on_artifact``, ``figures``). Nothing outside
the technique's own module names it (DESIGN.md, seam 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from edgeopt.core.config import Config
from edgeopt.core.errors import ConfigError
from edgeopt.core.train_data import TrainData

DEFAULT_CALIB_SIZE = 512


class DataKind(str, Enum):
    CALIBRATION = "calibration"  # preprocessed inputs, no labels
    TRAINING = "training"  # TrainData from the train split, labelled when the data has labels


@dataclass(frozen=True)
class DataNeed:
    """What a step asks of the train split: ``size`` samples (None: all of them), drawn
    with ``seed`` (None: the run's data seed, ``StepContext.seed``)."""

    kind: DataKind
    size: int | None = None
    seed: int | None = None


class StepConfig(Config):
    """Base of every recipe step's config.

    ``needs_training_data`` picks the default ``data_need``: labelled training data
    (all of the train split) or ``DEFAULT_CALIB_SIZE`` calibration inputs. A config
    with a subset size or seed of its own overrides ``data_need``. ``overridable``
    names the run-level options (``--budget``, ``--calib-size``) that ``override``
    applies to this step.
    """

    needs_training_data: ClassVar[bool] = False
    overridable: ClassVar[tuple[str, ...]] = ()

    def data_need(self) -> DataNeed:
        if self.needs_training_data:
            return DataNeed(DataKind.TRAINING)
        return DataNeed(DataKind.CALIBRATION, size=DEFAULT_CALIB_SIZE)

    def override(self, option: str, value: Any) -> Self:
        """This config with the run-level ``option`` set; only for names in ``overridable``."""
        raise ConfigError(f"{type(self).__name__} takes no {option!r} override")


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """Everything a step is given besides the model and its config.

    ``calibration``: preprocessed inputs (an N-first array, or an iterable of
    batches). ``train``: training data. ``teacher``: the model as it was before
    the recipe's first step (what distillation learns from by default).
    ``size_model``: bytes of the artifact compile would write for a canonical
    model, or None when no backend measures it. ``rng``: seeded by ``seed``.
    """

    calibration: Any = None
    train: TrainData | None = None
    teacher: nn.Module | None = None
    size_model: Callable[[Any], int] | None = None
    seed: int = 0
    progress: bool = True
    log: Callable[[str], None] = _quiet
    rng: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rng", np.random.default_rng(self.seed))

    @property
    def data(self) -> Any:
        """The training data when there is some, else the calibration inputs."""
        return self.train if self.train is not None else self.calibration

    def inputs(self) -> Any:
        """Model inputs without labels: the calibration inputs, else the training inputs."""
        if self.calibration is not None:
            return self.calibration
        return None if self.train is None else self.train.x

    def torch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


@dataclass(frozen=True)
class Figure:
    """A figure as data: the report layer draws it (``kind`` picks how, e.g. "pareto":
    ``points`` with label, ratio and accuracy) into ``file`` next to the report."""

    kind: str
    file: str
    points: list[dict[str, Any]]
    title: str = ""
    ylabel: str = ""


@dataclass
class StepRecord:
    """What one step did: ``details`` (JSON-ready) and how to say it.

    Techniques subclass it for their own phrases: ``summary`` (short phrases, one
    report bullet), ``report_lines`` (markdown below the bullet: tables, images),
    ``on_artifact`` (called with the compiled model file, to measure it) and
    ``figures`` (drawn next to the report). ``step`` is the recipe key; the
    registry fills it in.
    """

    technique: str
    details: dict[str, Any] = field(default_factory=dict)
    step: str = ""

    def summary(self) -> list[str] | str:
        return []

    def report_lines(self) -> list[str]:
        return []

    def on_artifact(self, model_file: Path) -> None:
        """Hook: the compiled model file now exists (sizes measured on the real file)."""

    def figures(self) -> list[Figure]:
        """Hook: figures to draw next to the report (``evaluate.plots.draw``)."""
        return []

    def summary_lines(self) -> list[str]:
        text = self.summary()
        return [text] if isinstance(text, str) else list(text)

    def to_dict(self) -> dict[str, Any]:
        extra = self.report_lines()
        return {"step": self.step, "technique": self.technique, **self.details,
                "summary": self.summary_lines(), **({"report_lines": extra} if extra else {})}


@dataclass(frozen=True)
class StepResult:
    model: nn.Module
    record: StepRecord
