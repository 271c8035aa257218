"""A small reusable training loop: fine-tuning for QAT, distillation and pruning.

``options`` holds the typed budget and result, ``schedule`` the learning-rate shape and
the optimizer, ``loop`` the loop itself (``fit``); see loop.py for the reproducibility
contract.
"""

from edgeopt.core.checkpoint import load_checkpoint, save_checkpoint
from edgeopt.core.train.loop import LossFn, cross_entropy_loss, fit, steps_per_epoch
from edgeopt.core.train.options import OptimizerKind, Schedule, TrainOptions, TrainResult
from edgeopt.core.train.schedule import lr_factor, make_optimizer
from edgeopt.core.train_data import TrainData, as_train_data, augment

__all__ = ["LossFn", "OptimizerKind", "Schedule", "TrainData", "TrainOptions", "TrainResult",
           "as_train_data", "augment", "cross_entropy_loss", "fit", "load_checkpoint",
           "lr_factor", "make_optimizer", "save_checkpoint", "steps_per_epoch"]
