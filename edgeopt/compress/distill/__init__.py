"""Knowledge distillation: soft-target and hint losses, fine-tuning with a teacher."""

from edgeopt.compress.distill import trainer  # noqa: F401  (registers the distill step)
from edgeopt.compress.distill.finetune import FinetuneOptions, finetune
from edgeopt.compress.distill.loss import HintLoss, kd_loss

__all__ = ["FinetuneOptions", "HintLoss", "finetune", "kd_loss"]
