"""Distillation losses: soft targets (Hinton et al. 2015) and feature hints (FitNets).

``kd_loss`` mixes the KL divergence between temperature-softened teacher and
student distributions (scaled by T^2 so its gradient does not shrink as T
grows) with the hard-label cross-entropy: ``alpha * KL_T + (1 - alpha) * CE``.

``HintLoss`` matches intermediate features: a forward hook records the output
of a named student layer and of a named teacher layer, a small adapter (1x1
conv, or linear for 2-D features) maps the student's channels to the teacher's,
and the loss is the mean squared error between the two. Spatial sizes must
agree; the adapters are trained with the student and thrown away after.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.core.errors import ConfigError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            labels: torch.Tensor | None, *, temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)``."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if labels is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def check_outputs_match(student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> None:
    """One clear line when the teacher's outputs cannot supervise the student's."""
    with torch.no_grad():
        was = student.training, teacher.training
        student.eval(), teacher.eval()
        try:
            s, t = student(example), teacher(example)
        finally:
            student.train(was[0]), teacher.train(was[1])
    if not isinstance(s, torch.Tensor) or not isinstance(t, torch.Tensor):
        raise ConfigError("distillation needs a student and a teacher that return one tensor each")
    if s.shape != t.shape:
        raise ConfigError(f"the teacher's outputs do not match the student's: teacher gives "
                          f"{tuple(t.shape[1:])} per sample, student {tuple(s.shape[1:])}")


def _module(model: nn.Module, name: str, who: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = [n for n in modules if n and fnmatch.fnmatch(n, f"*{name.split('.')[-1]}*")][:6]
    raise ConfigError(f"hint layer {name!r} is not a module of the {who} "
                      f"(similar names: {', '.join(close) or 'none'})")


class HintLoss(nn.Module):
    """MSE between adapted student features and teacher features at named layers.

    ``pairs`` maps a student layer name to a teacher layer name. Call
    ``shapes(example)`` once (it builds the adapters), then after each forward of
    both models ``loss()`` returns the summed hint loss of that batch.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: dict[str, str]) -> None:
        super().__init__()
        self.pairs = dict(pairs)
        self.adapters = nn.ModuleDict()
        self._feats: dict[str, torch.Tensor] = {}
        self._handles = []
        for i, (s_name, t_name) in enumerate(self.pairs.items()):
            s_mod = _module(student, s_name, "student")
            t_mod = _module(teacher, t_name, "teacher")
            self._handles.append(s_mod.register_forward_hook(self._save(f"s{i}")))
            self._handles.append(t_mod.register_forward_hook(self._save(f"t{i}")))

    def _save(self, key: str):
        def hook(_mod, _inp, out):
            self._feats[key] = out
        return hook

    def build(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> None:
        """Run both models once to size one adapter per pair; checks the shapes agree."""
        with torch.no_grad():
            student(example), teacher(example)
        for i, (s_name, t_name) in enumerate(self.pairs.items()):
            s, t = self._feats[f"s{i}"], self._feats[f"t{i}"]
            if s.dim() != t.dim() or s.shape[2:] != t.shape[2:]:
                raise ConfigError(f"hint {s_name} -> {t_name}: student features "
                                  f"{tuple(s.shape[1:])} and teacher features "
                                  f"{tuple(t.shape[1:])} differ in more than channels")
            if s.dim() == 4:
                adapter: nn.Module = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
            else:
                adapter = nn.Linear(s.shape[1], t.shape[1], bias=False)
            self.adapters[str(i)] = adapter
        self._feats.clear()

    def loss(self) -> torch.Tensor:
        total = 0.0
        for i in range(len(self.pairs)):
            s, t = self._feats[f"s{i}"], self._feats[f"t{i}"].detach()
            total = total + F.mse_loss(self.adapters[str(i)](s), t)
        self._feats.clear()
        return total

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
