"""Recipes: steps by registered name, a typed compile section, run-level overrides."""

from __future__ import annotations

import pytest

from edgeopt.compress.quantize.mixed import MixedPrecisionConfig
from edgeopt.core.errors import ConfigError
from edgeopt.recipes import CompileSection, builtin_recipes, load_recipe, parse_recipe
from edgeopt.recipes.overrides import with_overrides


def test_every_builtin_recipe_parses_and_round_trips():
    for name in builtin_recipes():
        recipe = load_recipe(name)
        again = parse_recipe(recipe.to_dict(), name)
        assert again.steps == recipe.steps and again.compile == recipe.compile


def test_compile_section_is_typed_and_checked():
    recipe = parse_recipe({"name": "r", "steps": [], "compile": {"backend": "tvm"}}, "r.yaml")
    assert recipe.compile == CompileSection(backend="tvm")
    assert parse_recipe({"name": "r"}, "r.yaml").compile.backend == "onnxruntime"
    with pytest.raises(ConfigError) as err:
        parse_recipe({"name": "r", "compile": {"backnd": "tvm"}}, "r.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("recipe r.yaml: compile:")
    assert "'backnd'" in message and "valid: backend" in message
    with pytest.raises(ConfigError, match=r"unknown backend 'tflite' \(valid: onnxruntime, tvm"):
        CompileSection(backend="tflite")


def test_unknown_step_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"recipe r.yaml: unknown step 'quantise' \(valid: "
                                          r"cluster, distill, .*quantize.*\)"):
        parse_recipe({"name": "r", "steps": [{"quantise": {}}]}, "r.yaml")


def test_overrides_reach_every_step_that_takes_them():
    mixed = load_recipe("mixed")
    out = with_overrides(mixed, {"budget": 0.25, "calib_size": 64})
    (step,) = out.steps
    assert isinstance(step, MixedPrecisionConfig)
    assert step.budget == 0.25 and step.avg_bits is None and step.base.calib_size == 64
    assert mixed.steps[0].budget == 0.16  # the loaded recipe is not changed
    dfq = with_overrides(load_recipe("int8-dfq"), {"calib_size": 32, "budget": None})
    assert [s.calib_size for s in dfq.steps] == [32, 32]


def test_an_override_no_step_takes_is_one_line():
    with pytest.raises(ConfigError) as err:
        with_overrides(load_recipe("int8"), {"budget": 0.2})
    message = str(err.value)
    assert message == ("--budget applies to a recipe with a step that takes it "
                       "(mixed_precision); recipe int8 has none")
