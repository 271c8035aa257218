"""Running a recipe's steps: each one's context built from what its config asks for.

A step's config says what data it needs (``StepConfig.data_need``); the subset
of the train split is drawn with the config's own subset seed when it has one
(``calib_seed``), else with the run's data seed, never with a technique's
other seeds (k-means++ sampling, training order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeopt.compile.backends.registry import get_backend
from edgeopt.compress import run_step
from edgeopt.core.canonical import editable
from edgeopt.core.data import Dataset, Preprocess
from edgeopt.core.registry import step_name
from edgeopt.core.sizing import SizeModel
from edgeopt.core.step import DataKind, StepContext, StepRecord
from edgeopt.core.train import TrainData
from edgeopt.recipes import Recipe


def step_context(cfg: Any, dataset: Dataset, preprocess: Preprocess, *,
                 teacher: nn.Module | None = None, size_model: SizeModel | None = None,
                 seed: int = 0, progress: bool = True,
                 log: Callable[[str], None] = print) -> tuple[StepContext, str]:
    """The context one step runs with, and a phrase for the log.

    Training steps get ``TrainData`` (labelled) from the train split, every other
    step preprocessed calibration inputs; ``teacher`` is the model before the
    recipe's first step; ``size_model`` the bytes of the backend's artifact.
    """
    need = cfg.data_need()
    split = dataset.train.subset(need.size, seed=seed if need.seed is None else need.seed)
    common = dict(teacher=teacher, size_model=size_model, seed=seed, progress=progress,
                  log=log)
    if need.kind is DataKind.TRAINING:
        train = TrainData(x=preprocess(split.x), y=split.y)
        return StepContext(train=train, **common), f"{len(split)} labelled training"
    return (StepContext(calibration=preprocess(split.x), **common),
            f"{len(split)} calibration")


@dataclass
class RecipeRun:
    """The compressed model and every step's record, in recipe order."""

    model: nn.Module
    records: list[StepRecord] = field(default_factory=list)


def run_recipe(model: nn.Module, recipe: Recipe, dataset: Dataset, preprocess: Preprocess, *,
               backend: str | None = None, seed: int = 0, progress: bool = True,
               log: Callable[[str], None] = print,
               after_step: Callable[[str, nn.Module], None] | None = None) -> RecipeRun:
    """Apply the recipe's steps in order. ``after_step(name, model)`` sees the model
    after every step but the last (the pipeline evaluates it as a stage of its own).

    ``backend``: the one the result is compiled with (default: the recipe's); a size
    budget is checked in the bytes of its artifacts (``Backend.size_model``)."""
    if not recipe.steps:
        return RecipeRun(model)
    size_model = get_backend(backend or recipe.compile.backend).size_model
    # A loaded program (TorchScript, torch.export) is edited as its canonical copy,
    # whose layers are real modules; it is also the distillation teacher.
    model = editable(model, torch.from_numpy(preprocess(dataset.train.x[:2])),
                     ", ".join(step_name(s) for s in recipe.steps))
    original = model
    records = []
    for i, cfg in enumerate(recipe.steps):
        ctx, what = step_context(cfg, dataset, preprocess, teacher=original,
                                 size_model=size_model, seed=seed, progress=progress, log=log)
        log(f"compress: {type(cfg).__name__} with {what} samples")
        result = run_step(model, cfg, ctx)
        model = result.model
        records.append(result.record)
        if after_step is not None and i < len(recipe.steps) - 1:
            after_step(result.record.step, model)
    return RecipeRun(model, records)
