"""The text_student step on the tiny BERT, and the distillation loop it shares
(compress/distill/text_distill.py): schedule, frozen embeddings, the teacher cache."""

import pytest

torch = pytest.importorskip("torch")

from edgeopt.compress.distill.text_distill import schedule  # noqa: E402
from edgeopt.compress.distill.text_student import (  # noqa: E402
    TextStudentConfig,
    kept_layers,
    text_student,
)
from edgeopt.core.errors import ConfigError  # noqa: E402
from edgeopt.core.step import StepContext  # noqa: E402


def test_kept_layers_keep_first_and_last():
    assert kept_layers(6, 3) == [0, 3, 5]
    assert kept_layers(12, 6) == [0, 3, 5, 7, 9, 11]
    assert kept_layers(2, 1) == [1]


def test_schedule_warms_up_then_decays_to_zero():
    f = [schedule(k, 100, 0.1) for k in range(100)]
    assert f[0] == pytest.approx(0.1, abs=1e-3) and f[9] == pytest.approx(1.0, abs=0.03)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # decreasing after the ramp
    assert f[-1] < 0.01 and f[50] == pytest.approx(0.5, abs=0.02)
    assert schedule(0, 10, 0.0) == pytest.approx(1.0)


def test_bad_config_is_one_line():
    with pytest.raises(ConfigError, match="warmup"):
        TextStudentConfig(warmup=1.5)


def test_student_distils_with_frozen_embeddings_and_a_teacher_cache(tiny_hf_batches):
    teacher, batches = tiny_hf_batches
    calls = []
    hook = teacher.register_forward_hook(lambda m, *a: calls.append(1) if m is teacher else None)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TextStudentConfig(layers=1, steps=24, lr=1e-3, warmup=0.1)
    result = text_student(teacher, cfg, StepContext(calibration=batches))
    hook.remove()
    d, student = result.record.details, result.model
    # 24 steps over 4 batches: the teacher runs once per batch, then its targets are reused
    assert len(calls) == len(batches) and d["cached_mb"] > 0
    assert d["kept"] == [1] and len(student.encoder.layer) == 1
    assert 1 - d["cos_last"] < 0.8 * (1 - d["cos_first"])
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(student.state_dict()[emb], before[emb])  # frozen
    moved = student.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(moved, before["encoder.layer.1.attention.self.query.weight"])
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_no_cache_budget_recomputes_the_teacher_and_trains_the_same(tiny_hf_batches):
    teacher, batches = tiny_hf_batches
    calls = []
    hook = teacher.register_forward_hook(lambda m, *a: calls.append(1) if m is teacher else None)
    cached = text_student(teacher, TextStudentConfig(layers=1, steps=8), StepContext(
        calibration=batches)).record.details
    calls.clear()
    cfg = TextStudentConfig(layers=1, steps=8, cache_mb=0, freeze_embeddings=False)
    fresh = text_student(teacher, cfg, StepContext(calibration=batches)).record.details
    hook.remove()
    assert len(calls) == 8 and fresh["cached_mb"] == 0
    # fp16 targets vs float ones, and the embeddings trained or not: the same fit, closely
    assert fresh["cos_last"] == pytest.approx(cached["cos_last"], abs=0.02)
