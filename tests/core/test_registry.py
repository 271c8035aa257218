"""The step registry: lookup by recipe name, the handler contract, records kept."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from edgeopt.compress import apply, run_step
from edgeopt.compress.quantize.equalize import EqualizeConfig
from edgeopt.compress.quantize.spec import Int8Config, QuantConfig
from edgeopt.core import registry
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register, step_config, step_name, step_names, steps_taking
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult
from edgeopt.recipes import parse_recipe
from edgeopt.recipes.run import run_recipe

BUILTIN = {"cluster", "distill", "equalize", "lowrank", "mixed_precision", "prune", "qat",
           "quantize", "sparsify", "split_channels"}


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are gone after it."""
    monkeypatch.setattr(registry, "_BY_TYPE", dict(registry._BY_TYPE))
    monkeypatch.setattr(registry, "_BY_STEP", dict(registry._BY_STEP))


@dataclass(frozen=True, kw_only=True)
class ScaleConfig(StepConfig):
    factor: float = 2.0


class ScaleRecord(StepRecord):
    def summary(self) -> str:
        return f"weights scaled by {self.details['factor']}"


def _scale(model, config: ScaleConfig, ctx: StepContext) -> StepResult:
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(config.factor)
    return StepResult(out, ScaleRecord("scaling", {"factor": config.factor,
                                                   "calib": len(ctx.inputs())}))


def test_every_builtin_technique_registered_its_step():
    assert BUILTIN <= set(step_names())
    assert step_config("quantize") is QuantConfig
    assert step_name(QuantConfig()) == "quantize"
    # A subclass without a registration of its own is its base's step.
    assert step_name(Int8Config()) == "quantize"
    assert steps_taking("budget") == ["mixed_precision"]
    assert set(steps_taking("calib_size")) == {"equalize", "mixed_precision", "quantize"}


def test_unknown_step_is_one_line_naming_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        step_config("quantise", "recipe r.yaml: ")
    message = str(err.value)
    assert "\n" not in message and message.startswith("recipe r.yaml: unknown step 'quantise'")
    assert all(name in message for name in BUILTIN)


def test_a_step_name_is_one_configs(scratch_registry):
    with pytest.raises(ValueError, match="already QuantConfig's"):
        register(ScaleConfig, step="quantize")
    with pytest.raises(TypeError, match="must subclass StepConfig"):
        register(dict, step="dicts")


def test_a_new_technique_is_a_recipe_step_with_no_table_edited(scratch_registry, tiny_cnn):
    register(ScaleConfig, step="scale")(_scale)
    recipe = parse_recipe({"name": "s", "steps": [{"scale": {"factor": 3.0}}]}, "test")
    assert recipe.steps == [ScaleConfig(factor=3.0)]
    assert recipe.to_dict()["steps"] == [{"scale": {"factor": 3.0}}]
    from edgeopt.core.data import Dataset, Preprocess, Split

    x = torch.rand(40, 1, 8, 8).mul(255).to(torch.uint8).numpy()
    split = Split(x, torch.randint(0, 10, (40,)).numpy())
    data = Dataset(name="toy", train=split, test=split, num_classes=10)
    run = run_recipe(tiny_cnn, recipe, data, Preprocess(), progress=False, log=lambda m: None)
    first = next(run.model.parameters())
    assert torch.allclose(first, 3.0 * next(tiny_cnn.parameters()))
    (record,) = run.records
    assert record.step == "scale" and record.details == {"factor": 3.0, "calib": 40}
    assert record.to_dict()["summary"] == ["weights scaled by 3.0"]
    assert run.model.meta["edgeopt"]["scale"]["factor"] == 3.0


def test_a_handler_must_return_a_step_result(scratch_registry, tiny_cnn):
    register(ScaleConfig, step="scale")(lambda model, config, ctx: model)
    with pytest.raises(TypeError, match="returned TinyCNN, not a StepResult"):
        run_step(tiny_cnn, ScaleConfig(), StepContext(calibration=torch.zeros(2, 1, 8, 8)))


def test_a_later_step_keeps_the_earlier_steps_records(ptq_cnn, calib):
    """equalize folds the BNs; quantize then folds none. Both records stay, each its own:
    PTQ used to replace meta["edgeopt"] wholesale."""
    eq = apply(ptq_cnn, EqualizeConfig(calib_size=32), data=calib, progress=False)
    q = apply(eq, QuantConfig(calib_size=48), data=calib, progress=False)
    info = q.meta["edgeopt"]
    assert info["equalize"]["folded_bn"] == eq.meta["edgeopt"]["equalize"]["folded_bn"] != []
    assert info["equalize"]["pairs"] == eq.meta["edgeopt"]["equalize"]["pairs"]
    assert info["quantize"]["folded_bn"] == [] and info["quantize"]["calib_samples"] == 48
    assert set(info["precision"].values()) == {"w8a8"}
    assert info["equalize"]["step"] == "equalize" and info["quantize"]["technique"] == "ptq"
    # The equalized model's own record was copied, not shared.
    assert "quantize" not in eq.meta["edgeopt"]


def test_a_config_no_technique_handles_is_one_line_naming_the_known_ones():
    @dataclass(frozen=True, kw_only=True)
    class Orphan(StepConfig):
        pass

    with pytest.raises(ConfigError) as err:
        registry.entry_for(Orphan())
    message = str(err.value)
    assert message.startswith("no technique handles Orphan (known configs: ")
    assert "QuantConfig" in message and "DistillConfig" in message and "\n" not in message


def test_a_subclass_with_its_own_registration_gets_its_own_handler(scratch_registry):
    @dataclass(frozen=True, kw_only=True)
    class DoubleScale(ScaleConfig):
        pass

    register(ScaleConfig, step="scale")(_scale)
    assert registry.handler_for(DoubleScale()) is _scale  # inherited until registered
    register(DoubleScale, step="double")(lambda m, c, ctx: _scale(m, c.replace(factor=4.0),
                                                                  ctx))
    assert step_name(DoubleScale()) == "double" and step_name(ScaleConfig()) == "scale"
    assert registry.handler_for(DoubleScale()) is not _scale


def test_run_names_the_record_and_keeps_only_step_records(scratch_registry, tiny_cnn):
    def unnamed(model, config, ctx):
        out = copy.deepcopy(model)
        out.meta = {}  # a fresh model: the earlier records must be carried over
        return StepResult(out, ScaleRecord("", {"factor": config.factor}))

    register(ScaleConfig, step="scale")(unnamed)
    tiny_cnn.meta = {"edgeopt": {"quantize": {"step": "quantize", "bits": 8},
                                 "precision": {"head": "w8a8"}}}
    result = registry.run(tiny_cnn, ScaleConfig(factor=5.0),
                          StepContext(calibration=torch.zeros(2, 1, 8, 8)))
    assert result.record.step == "scale"
    info = result.model.meta["edgeopt"]
    assert info["scale"]["factor"] == 5.0 and info["scale"]["step"] == "scale"
    # Step records travel (a copy); other keys ("precision") belong to the handler.
    assert info["quantize"] == {"step": "quantize", "bits": 8}
    assert info["quantize"] is not tiny_cnn.meta["edgeopt"]["quantize"]
    assert "precision" not in info
    assert set(registry.records(result.model)) == {"quantize", "scale"}
