"""Distillation: the soft-target loss, hint adapters, the distill step and its errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress import apply, run_step
from edgeopt.compress.distill.finetune import FinetuneOptions, finetune, frozen_teacher, top1
from edgeopt.compress.distill.loss import HintLoss, kd_loss
from edgeopt.compress.distill.trainer import DistillConfig
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.core.step import StepContext
from edgeopt.core.train import TrainData


def test_kd_loss_is_zero_for_identical_logits_and_scales_with_t_squared():
    s = torch.randn(8, 10)
    assert float(kd_loss(s, s, None, temperature=4.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(8, 10)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    assert float(kd_loss(s, t, None, temperature=2.0, alpha=1.0)) == pytest.approx(4 * float(kl),
                                                                                     rel=1e-5)
    y = torch.randint(0, 10, (8,))
    mixed = kd_loss(s, t, y, temperature=2.0, alpha=0.25)
    expected = 0.25 * 4 * kl + 0.75 * F.cross_entropy(s, y)
    assert float(mixed) == pytest.approx(float(expected), rel=1e-5)


def test_hint_loss_builds_adapters_of_the_right_width(make_cnn):
    student, teacher = make_cnn(seed=0, width=4), make_cnn(seed=1, width=8)
    hints = HintLoss(student, teacher, {"features.2": "features.2"})
    x = torch.randn(3, 1, 8, 8)
    hints.build(student, teacher, x)
    conv = hints.adapters["0"]
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (4, 8)
    student(x), teacher(x)
    assert float(hints.loss().detach()) > 0
    hints.remove()
    student(x)
    with pytest.raises(KeyError):
        hints.loss()  # hooks are gone: nothing was recorded


def test_hint_layer_that_does_not_exist_is_one_line(make_cnn):
    with pytest.raises(ConfigError, match="hint layer 'features.9' is not a module of the student"):
        HintLoss(make_cnn(seed=0), make_cnn(seed=1), {"features.9": "features.2"})


@pytest.fixture(scope="module")
def digits_data():
    ds = load_dataset("digits")
    pre = Preprocess()
    train = TrainData(x=pre(ds.train.x), y=ds.train.y)
    test = (torch.from_numpy(pre(ds.test.x)), torch.from_numpy(ds.test.y).long())
    return train, test


def test_distilled_student_learns_from_teacher_without_labels(digits_data, train_tiny, make_cnn,
                                                            one_thread):
    train, (xt, yt) = digits_data
    teacher = train_tiny(make_cnn(seed=0, width=8, hidden=64), train.x, train.y, epochs=8)
    unlabelled = TrainData(x=train.x)
    # A different architecture: a 4-wide ResNet learns from the CNN's soft targets alone.
    cfg = DistillConfig(teacher="input", student="edgeopt.zoo.resnet:resnet_small",
                        student_kwargs={"width": 4}, steps=150, lr=3e-3, temperature=2.0)
    student = apply(teacher, cfg, data=unlabelled, progress=False)
    assert isinstance(student, nn.Module) and student is not teacher
    # Labels were never seen, yet the student matches most of the teacher's accuracy.
    assert top1(student, xt, yt) > top1(teacher, xt, yt) - 15
    info = student.meta["edgeopt"]["distill"]
    assert info["alpha"] == 1.0 and info["steps"] == 150 and info["teacher"] == "incoming model"


def test_original_teacher_comes_from_the_step_context(digits_data, train_tiny, make_cnn):
    train, _ = digits_data
    original = make_cnn(seed=0, width=8)
    ctx = StepContext(train=TrainData(x=train.x[:128], y=train.y[:128]), teacher=original,
                      progress=False)
    out = run_step(make_cnn(seed=3, width=8), DistillConfig(steps=2), ctx)
    assert out.record.details["teacher"] == "original model"
    assert out.model.meta["edgeopt"]["distill"]["teacher"] == "original model"
    # Without a context teacher, "original" is the incoming model.
    alone = apply(make_cnn(seed=3, width=8), DistillConfig(steps=2), data=ctx.train,
                  progress=False)
    assert alone.meta["edgeopt"]["distill"]["teacher"] == "incoming model"


def test_teacher_outputs_must_match_the_student(make_cnn):
    student = make_cnn(seed=0, classes=10)
    teacher = make_cnn(seed=1, classes=7)
    data = TrainData(x=torch.randn(16, 1, 8, 8), y=torch.randint(0, 10, (16,)))
    with pytest.raises(ConfigError, match=r"teacher's outputs do not match.*\(7,\).*\(10,\)"):
        finetune(student, data, FinetuneOptions(steps=1), teacher=frozen_teacher(teacher),
                 progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, "temperature must be > 0"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
    ({"student": "resnet_small"}, "must be pkg.module:factory"),
    ({"distill": False}, "distill.distill must be true"),
])
def test_bad_distill_config_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(steps=1, **kwargs)


def test_default_budget_is_one_epoch():
    assert DistillConfig().epochs == 1.0 and math.isclose(DistillConfig(steps=5).steps, 5)
