"""A small reusable training loop: fine-tuning for QAT, distillation and pruning.

``fit(model, data, options, loss_fn=...)`` trains on preprocessed arrays with a
budget in steps, epochs and/or wall-clock seconds, writes checkpoints
atomically (also when SIGINT or SIGTERM stops it, see ``core.interrupts``), and
resumes from one exactly where it stopped.

Reproducibility: the sample order of step ``s`` is a function of (seed, epoch)
and its augmentation a function of (seed, s); the global torch RNG (dropout)
is saved in the checkpoint. A run resumed from a checkpoint therefore ends with
the same weights as one that never stopped. The learning rate follows the
step when the budget has steps or epochs; with ``max_seconds`` alone it anneals
over this run's wall-clock time, which no resume can reproduce.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edgeopt.core.checkpoint import load_checkpoint, save_checkpoint
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.interrupts import Interrupted, deferred
from edgeopt.core.train.options import TrainOptions, TrainResult
from edgeopt.core.train.schedule import lr_factor, make_optimizer
from edgeopt.core.train_data import TrainData, augment

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise DataError("cross-entropy training needs labels (TrainData.y is None)")
    return F.cross_entropy(model(x), y)


def steps_per_epoch(n: int, batch_size: int) -> int:
    # The last partial batch is dropped (a batch of one breaks batch norm in training),
    # unless the data is smaller than one batch.
    return max(n // batch_size, 1)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    per_epoch = steps_per_epoch(n, batch_size)
    epoch, i = divmod(step, per_epoch)
    # A fresh generator per epoch: the order of any step is known without replaying the run.
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return torch.from_numpy(order[i * batch_size:(i + 1) * batch_size])


def _step_generator(seed: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def fit(model: nn.Module, data: TrainData, options: TrainOptions, *,
        loss_fn: LossFn = cross_entropy_loss,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]] | None = None,
        after_step: Callable[[nn.Module], None] | None = None,
        progress: bool = True, desc: str = "train",
        log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` in place (in train mode; its mode is restored) and return what happened.

    ``loss_fn(model, x, y)`` returns the scalar loss of one batch (default:
    cross-entropy on ``model(x)``); ``params`` are the tensors or optimizer
    param groups to train (default: every parameter that requires grad, weight
    decay on those with ndim > 1); ``after_step(model)`` runs after every
    optimizer step, without grad (clamp scales, re-apply pruning masks).
    """
    if not isinstance(data, TrainData):
        raise DataError(f"training data must be a TrainData, got {type(data).__name__}")
    n = len(data)
    per_epoch = steps_per_epoch(n, options.batch_size)
    limits = []
    if options.steps is not None:
        limits.append(("steps", options.steps))
    if options.epochs is not None:
        limits.append(("epochs", max(1, round(options.epochs * per_epoch))))
    total = min((v for _, v in limits), default=None)
    stop_reason = min(limits, key=lambda kv: kv[1])[0] if limits else "time"
    optimizer = make_optimizer(model, options, params)
    peaks = [g["lr"] for g in optimizer.param_groups]

    step, resumed_from = 0, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        if options.resume and options.checkpoint and Path(options.checkpoint).is_file():
            state = load_checkpoint(options.checkpoint)
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0]
                raise ConfigError(f"{options.checkpoint}: checkpoint does not match this model "
                                  f"and optimizer ({first})") from None
            torch.set_rng_state(state["torch_rng"])
            step = resumed_from = int(state["step"])
            if log:
                log(f"{desc}: resumed from {options.checkpoint} at step {step}")
        elif options.resume and log:
            log(f"{desc}: no checkpoint at {options.checkpoint} yet; starting from step 0")
        return _loop(model, data, options, optimizer, peaks, step, resumed_from, total,
                     stop_reason, loss_fn, after_step, progress, desc)


def _loop(model, data, options, optimizer, peaks, step, resumed_from, total, stop_reason,
          loss_fn, after_step, progress, desc) -> TrainResult:
    start = time.perf_counter()
    losses: list[float] = []
    y = data.y
    was_training = model.training
    model.train()

    def schedule_state() -> dict[str, Any]:
        return {"kind": options.schedule.value, "total": total, "peaks": peaks}

    def checkpoint() -> None:
        if options.checkpoint:
            recent = float(np.mean(losses[-20:])) if losses else None
            save_checkpoint(options.checkpoint, model=model, optimizer=optimizer, step=step,
                            schedule=schedule_state(), loss=recent)

    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress, leave=False,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)
    finished_before = total is not None and step >= total
    reason = "checkpoint" if finished_before else stop_reason
    try:
        while total is None or step < total:
            elapsed = time.perf_counter() - start
            if options.max_seconds is not None and elapsed >= options.max_seconds:
                reason = "time"
                break
            progress_frac = step / total if total else elapsed / options.max_seconds
            factor = lr_factor(options.schedule, progress_frac, options.warmup)
            for group, peak in zip(optimizer.param_groups, peaks, strict=True):
                group["lr"] = peak * factor
            idx = _batch_indices(len(data), options.batch_size, options.seed, step)
            xb = augment(data.x[idx], _step_generator(options.seed, step), options.shift,
                         options.hflip)
            # One step whole or not at all: the weights, the optimizer, the torch RNG
            # (dropout) and ``step`` agree whenever a signal is raised, so the checkpoint
            # written for it resumes exactly.
            with deferred():
                loss = loss_fn(model, xb, None if y is None else y[idx])
                if not torch.isfinite(loss):
                    raise ConfigError(f"{desc}: the loss became {float(loss)} at step {step}; "
                                      f"lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    with torch.no_grad():
                        after_step(model)
                step += 1
                losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if options.checkpoint and step % options.checkpoint_every == 0:
                checkpoint()
    except Interrupted:
        checkpoint()  # SIGINT or SIGTERM: --resume continues from this very step
        raise
    finally:
        bar.close()
        model.train(was_training)  # hand the model back in the mode it came in
    if not finished_before:
        checkpoint()
    return TrainResult(
        steps=step,
        final_loss=float(np.mean(losses[-20:])) if losses else None,
        seconds=time.perf_counter() - start,
        resumed_from=resumed_from,
        stopped_by=reason,
        losses=losses,
    )
