import io
import os
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.interrupts import Interrupted, handle_signals
from edgeopt.core.train import (
    Schedule,
    TrainData,
    TrainOptions,
    cross_entropy_loss,
    fit,
    load_checkpoint,
    lr_factor,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    """Conv + dropout + linear: exercises augmentation, the global RNG and AdamW state."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv(x))).flatten(1))


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


@pytest.fixture
def data() -> TrainData:
    g = torch.Generator().manual_seed(0)
    return TrainData(x=torch.rand(100, 1, 8, 8, generator=g).numpy(),
                     y=torch.randint(0, 3, (100,), generator=g).numpy())


def _opts(**kw) -> TrainOptions:
    base = dict(steps=12, lr=1e-2, batch_size=16, shift=1, hflip=True, seed=3, warmup=0.2)
    return TrainOptions(**{**base, **kw})


def _slow(seconds):
    def loss(model, x, y):
        time.sleep(seconds)
        return cross_entropy_loss(model, x, y)
    return loss


def test_step_and_epoch_budgets(data):
    r = fit(_net(), data, _opts(steps=7), progress=False)
    assert (r.steps, len(r.losses), r.stopped_by) == (7, 7, "steps")
    # 100 samples / batch 16 = 6 full batches per epoch (the partial one is dropped)
    r = fit(_net(), data, _opts(steps=None, epochs=2), progress=False)
    assert (r.steps, r.stopped_by) == (12, "epochs")
    r = fit(_net(), data, _opts(steps=5, epochs=2), progress=False)
    assert (r.steps, r.stopped_by) == (5, "steps")


def test_time_budget_stops_cleanly_and_checkpoints(data, tmp_path):
    ckpt = tmp_path / "ck.pt"
    r = fit(_net(), data, _opts(steps=1000, max_seconds=0.3, checkpoint=str(ckpt)),
            loss_fn=_slow(0.05), progress=False)
    assert r.stopped_by == "time"
    assert 1 <= r.steps < 20
    assert r.seconds < 0.3 + 0.25  # at most one step past the limit
    assert load_checkpoint(ckpt)["step"] == r.steps
    # time alone is a budget too (the schedule anneals over it)
    r = fit(_net(), data, _opts(steps=None, max_seconds=0.2), loss_fn=_slow(0.02),
            progress=False)
    assert r.stopped_by == "time" and r.steps >= 1


def test_resume_after_a_crash_gives_the_uninterrupted_weights(data, tmp_path):
    ref = _net()
    fit(ref, data, _opts(), progress=False)

    ckpt = tmp_path / "ck.pt"
    calls = {"n": 0}

    def crash_at_step_8(model, x, y):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return cross_entropy_loss(model, x, y)

    model = _net()
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, _opts(checkpoint=str(ckpt), checkpoint_every=3), loss_fn=crash_at_step_8,
            progress=False)
    assert load_checkpoint(ckpt)["step"] == 6

    resumed = _net()  # a fresh process: only the checkpoint carries state
    r = fit(resumed, data, _opts(checkpoint=str(ckpt), checkpoint_every=3, resume=True),
            progress=False)
    assert (r.resumed_from, r.steps, len(r.losses)) == (6, 12, 6)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # an uninterrupted, non-resumed run is a different one when the seed differs
    other = _net()
    fit(other, data, _opts(seed=4), progress=False)
    assert not torch.equal(other.fc.weight, ref.fc.weight)


def test_a_signal_mid_step_checkpoints_that_step_and_resumes_exactly(data, tmp_path):
    """SIGTERM inside step 5 (after the optimizer moved the weights, before the count):
    the step finishes, the checkpoint says 5 and holds step 5's weights. Cut mid-step,
    it held moved weights under step 4, and the resumed run took step 4 twice."""
    ref = _net()
    fit(ref, data, _opts(), progress=False)
    ckpt, calls = tmp_path / "ck.pt", {"n": 0}

    def signal_in_step_5(model):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs in the main thread at its next check
                time.sleep(0.002)

    with pytest.raises(Interrupted), handle_signals():
        fit(_net(), data, _opts(checkpoint=str(ckpt)), after_step=signal_in_step_5,
            progress=False)
    assert load_checkpoint(ckpt)["step"] == 5  # checkpoint_every is 200: written for the signal
    resumed = _net()
    r = fit(resumed, data, _opts(checkpoint=str(ckpt), resume=True), progress=False)
    assert (r.resumed_from, r.steps) == (5, 12)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_repeated_time_limited_runs_add_up_to_one_run(data, tmp_path):
    ref = _net()
    fit(ref, data, _opts(), progress=False)
    ckpt = tmp_path / "ck.pt"
    opts = _opts(max_seconds=0.12, checkpoint=str(ckpt), resume=True)
    model, runs, r = _net(), 0, None
    while r is None or r.steps < 12:
        model = _net()
        r = fit(model, data, opts, loss_fn=_slow(0.03), progress=False)
        runs += 1
        assert runs < 15
    assert runs > 1
    assert torch.equal(model.fc.weight, ref.fc.weight)
    assert torch.equal(model.conv.weight, ref.conv.weight)
    # resuming a finished run trains no further
    r = fit(model, data, opts, progress=False)
    assert (r.steps, r.losses, r.stopped_by) == (12, [], "checkpoint")


def test_checkpoints_never_unpickle_objects(tmp_path):
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": 1, "payload": Schedule}, buf)  # an arbitrary class: needs pickle
    path.write_bytes(buf.getvalue())
    with pytest.raises(ConfigError, match="cannot read training checkpoint"):
        load_checkpoint(path)


def test_mismatched_checkpoint_is_one_clear_error(data, tmp_path):
    ckpt = tmp_path / "ck.pt"
    fit(_net(), data, _opts(steps=2, checkpoint=str(ckpt)), progress=False)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ConfigError, match="does not match"):
        fit(other, data, _opts(checkpoint=str(ckpt), resume=True), progress=False)


def test_schedules():
    assert lr_factor(Schedule.COSINE, 0.0, 0.1) < 0.02
    assert lr_factor(Schedule.COSINE, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(Schedule.COSINE, 1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(Schedule.ONECYCLE, 0.0, 0.3) == pytest.approx(1 / 25)
    assert lr_factor(Schedule.ONECYCLE, 0.3, 0.3) == pytest.approx(1.0)
    assert lr_factor(Schedule.CONSTANT, 0.9, 0.1) == 1.0
    lrs = [lr_factor(Schedule.COSINE, p, 0.0) for p in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_bad_data_and_options():
    with pytest.raises(DataError, match="3 training samples but 2 labels"):
        TrainData(x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match="labels must be 1-D integers"):
        TrainData(x=np.zeros((2, 1, 2, 2), np.float32), y=np.array([0.5, 1.0]))
    unlabelled = TrainData(x=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="needs labels"):
        fit(_net(), unlabelled, _opts(steps=1), progress=False)
    with pytest.raises(ConfigError, match="budget is required"):
        TrainOptions()
    with pytest.raises(ConfigError, match="resume needs a checkpoint"):
        TrainOptions(steps=1, resume=True)
    with pytest.raises(ConfigError, match="unknown value 'rmsprop'"):
        TrainOptions(steps=1, optimizer="rmsprop")
    assert TrainOptions.from_dict({"steps": 3, "schedule": "onecycle"}).schedule is Schedule.ONECYCLE


def test_a_budget_is_required_unless_the_step_names_a_default():
    from edgeopt.compress.distill.trainer import DistillConfig
    from edgeopt.compress.quantize.qat import QATConfig

    with pytest.raises(ConfigError, match="training budget is required"):
        TrainOptions()
    # Distillation and QAT default to one pass; an explicit budget replaces the default.
    assert DistillConfig().epochs == 1.0 and QATConfig().epochs == 1.0
    assert DistillConfig(steps=5).epochs is None
