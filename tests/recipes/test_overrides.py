"""--train-epochs / --train-seconds / --checkpoint-dir / --resume on a recipe's training steps."""

from __future__ import annotations

import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.recipes import load_recipe, parse_recipe
from edgeopt.recipes.overrides import with_training


def _recipe():
    return parse_recipe({"name": "r", "steps": [
        {"distill": {"steps": 100}},
        {"quantize": {}},
        {"qat": {"epochs": 2}},
    ]}, "test")


def test_budget_replaces_every_training_steps_limits(tmp_path):
    r = with_training(_recipe(), seconds=30, checkpoint_dir=tmp_path / "ck", resume=True)
    distill, quant, qat = r.steps
    assert (distill.steps, distill.epochs, distill.max_seconds) == (None, None, 30)
    assert (qat.steps, qat.epochs, qat.max_seconds) == (None, None, 30)
    assert distill.checkpoint == str(tmp_path / "ck" / "step0-distill.pt") and distill.resume
    assert qat.checkpoint == str(tmp_path / "ck" / "step2-qat.pt")
    assert not hasattr(quant, "checkpoint") and (tmp_path / "ck").is_dir()
    assert _recipe().steps[0].steps == 100  # the recipe itself is unchanged


def test_no_override_returns_the_recipe():
    r = _recipe()
    assert with_training(r) is r


@pytest.mark.parametrize("kwargs, message", [
    ({"resume": True}, "--resume needs --checkpoint-dir"),
    ({"epochs": 1}, "recipe int8 has no training step"),
])
def test_bad_overrides_are_one_line(kwargs, message):
    recipe = load_recipe("int8") if "epochs" in kwargs else _recipe()
    with pytest.raises(ConfigError, match=message):
        with_training(recipe, **kwargs)
