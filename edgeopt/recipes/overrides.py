"""Command-line overrides of a recipe.

``with_overrides``: run-level step options (``--budget``, ``--calib-size``), each
given to every step whose config lists it in ``StepConfig.overridable``.

``with_training``: one budget and one checkpoint folder for every step that
trains (QAT, distillation, a technique's fine-tuning).

A step trains when its config is a ``TrainOptions`` (``qat``, ``distill``) or
carries one as ``finetune`` (pruning, clustering, low-rank). Each gets its own
checkpoint file, ``DIR/step<i>-<key>[-finetune].pt``, so ``--resume`` continues
every one of them where it stopped; steps before it re-run deterministically.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import step_name, steps_taking
from edgeopt.core.train import TrainOptions
from edgeopt.recipes import Recipe


def with_overrides(recipe: Recipe, options: dict[str, Any]) -> Recipe:
    """``recipe`` with each option (None: not given) set on every step that takes it;
    an option no step of the recipe takes is a one-line ``ConfigError``."""
    steps = list(recipe.steps)
    for option, value in options.items():
        if value is None:
            continue
        takers = [i for i, s in enumerate(steps) if option in type(s).overridable]
        if not takers:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag} applies to a recipe with a step that takes it "
                              f"({', '.join(steps_taking(option)) or 'none'}); recipe "
                              f"{recipe.name} has none")
        for i in takers:
            steps[i] = steps[i].override(option, value)
    return dataclasses.replace(recipe, steps=steps)


def _budget(opts: TrainOptions, epochs: float | None, seconds: float | None) -> TrainOptions:
    if epochs is None and seconds is None:
        return opts
    # The given limits replace the recipe's: --train-seconds alone trains by time only.
    return opts.replace(steps=None, epochs=epochs, max_seconds=seconds)


def with_training(recipe: Recipe, *, epochs: float | None = None, seconds: float | None = None,
                  checkpoint_dir: str | Path | None = None, resume: bool = False) -> Recipe:
    """``recipe`` with every training step's budget and checkpoint overridden."""
    if resume and checkpoint_dir is None:
        raise ConfigError("--resume needs --checkpoint-dir (the folder of an earlier run's "
                          "checkpoints)")
    if epochs is None and seconds is None and checkpoint_dir is None:
        return recipe

    def override(opts: TrainOptions, name: str) -> TrainOptions:
        opts = _budget(opts, epochs, seconds)
        if checkpoint_dir is not None:
            opts = opts.replace(checkpoint=str(Path(checkpoint_dir) / f"{name}.pt"), resume=resume)
        return opts

    steps, trains = [], False
    for i, cfg in enumerate(recipe.steps):
        name = f"step{i}-{step_name(cfg)}"
        if isinstance(cfg, TrainOptions):
            cfg, trains = override(cfg, name), True
        elif isinstance(getattr(cfg, "finetune", None), TrainOptions):
            cfg, trains = cfg.replace(finetune=override(cfg.finetune, f"{name}-finetune")), True
        steps.append(cfg)
    if not trains:
        raise ConfigError(f"recipe {recipe.name} has no training step; --train-epochs, "
                          f"--train-seconds and --checkpoint-dir apply to recipes that train")
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(recipe, steps=steps)
