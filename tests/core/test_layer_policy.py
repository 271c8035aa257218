"""The one per-layer policy (core/layer_policy.py): matching, resolution, errors, old spellings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import pytest

from edgeopt.core.config import Config, first_match, matches
from edgeopt.core.errors import ConfigError
from edgeopt.core.layer_policy import LayerPolicy, flow


class Mode(str, Enum):
    FAST = "fast"
    EXACT = "exact"


@dataclass(frozen=True, kw_only=True)
class Spec(Config):
    bits: int = 8
    signed: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"bits must be in 2..8, got {self.bits}")


@dataclass(frozen=True, kw_only=True)
class Demo(Config):
    policy: ClassVar[LayerPolicy] = LayerPolicy(
        "demo", fields=("count", "scale", "mode", "spec"), aliases={"bits": ("spec", "bits")},
        null_skips=("count",))

    count: int = 4
    scale: float | None = None
    mode: Mode = Mode.FAST
    spec: Spec = Spec()
    other: int = 0  # not a per-layer field
    layers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"demo.count must be >= 1, got {self.count}")
        object.__setattr__(self, "layers", self.policy.from_scalars(self.layers, "count"))
        self.policy.check(self)

    def at(self, name: str) -> Demo | None:
        return self.policy.resolve(self, name)


# -- the matching rule --------------------------------------------------------------------

def test_a_pattern_covers_the_name_and_the_children_of_a_container_it_names():
    assert matches("layer3.conv2", "layer3.conv2")
    assert matches("layer3.conv2.0", "layer3.conv2")  # a conv_bn Sequential's conv
    assert matches("layer3.conv2.0.weight_fake", "layer3.*")
    assert not matches("fc2", "fc")  # children only, never siblings
    assert not matches("layer3.conv", "layer3.conv2")
    assert first_match("features.0.0", ["head", "features.0", "*"]) == "features.0"


# -- resolution ---------------------------------------------------------------------------

def test_first_match_wins_when_two_patterns_match():
    cfg = Demo(layers={"block.0": {"count": 2}, "block.*": {"count": 3}, "*": {"count": 5}})
    assert cfg.at("block.0.conv").count == 2  # both "block.0" and "block.*" cover it
    assert cfg.at("block.1").count == 3
    assert cfg.at("head").count == 5
    swapped = Demo(layers={"block.*": {"count": 3}, "block.0": {"count": 2}})
    assert swapped.at("block.0.conv").count == 3  # order, not specificity, decides


def test_resolve_replaces_only_the_entry_fields():
    cfg = Demo(count=4, other=7, layers={"fc": {"scale": 2, "mode": "exact"}})
    own = cfg.at("fc")
    assert (own.count, own.scale, own.mode, own.other) == (4, 2.0, Mode.EXACT, 7)
    assert isinstance(own.scale, float)  # coerced with the field's own type
    assert cfg.at("conv") is cfg  # no pattern: the config itself


def test_skip_and_null_skip_leave_the_layer_alone():
    cfg = Demo(layers={"a": {"skip": True}, "b": {"count": None}, "c": {"skip": False}})
    assert cfg.at("a") is None and cfg.at("b") is None
    assert cfg.at("c") == cfg


def test_nested_spec_by_alias_or_mapping_changes_only_those_attributes():
    cfg = Demo(spec=Spec(bits=8, signed=False),
               layers={"x": {"bits": 4}, "y": {"spec": {"bits": 2}}})
    assert cfg.at("x").spec == Spec(bits=4, signed=False)
    assert cfg.at("y").spec == Spec(bits=2, signed=False)  # not Spec() defaults


# -- errors -------------------------------------------------------------------------------

def test_unknown_key_names_the_pattern_the_key_and_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        Demo(layers={"fc*": {"other": 1}})
    assert str(err.value) == ("demo.layers['fc*']: unknown key 'other' "
                              "(valid: bits, count, mode, scale, skip, spec)")


@pytest.mark.parametrize("entry", [{"count": "three"}, {"count": 2.5}, {"mode": "slow"},
                                   {"skip": "yes"}, {"scale": "big"}, {"spec": {"width": 3}}])
def test_a_value_of_the_wrong_type_is_refused_in_one_line(entry):
    expected = {
        "count": "demo.layers['fc'].count: expected int, got",
        "mode": "demo.layers['fc'].mode: unknown value 'slow' (valid: fast, exact)",
        "skip": "demo.layers['fc']: skip must be true or false, got 'yes'",
        "scale": "demo.layers['fc'].scale: expected a number, got 'big'",
        "spec": "demo.layers['fc'].spec: unknown key 'width' (valid: bits, signed)",
    }[next(iter(entry))]
    with pytest.raises(ConfigError) as err:
        Demo(layers={"fc": entry})
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_value_is_checked_by_the_configs_own_rules_and_names_the_pattern():
    with pytest.raises(ConfigError) as err:
        Demo(layers={"fc": {"count": 0}})
    assert str(err.value) == "demo.layers['fc']: count must be >= 1, got 0"
    with pytest.raises(ConfigError) as err:
        Demo(layers={"fc": {"bits": 9}})
    assert str(err.value) == "demo.layers['fc']: bits must be in 2..8, got 9"
    with pytest.raises(ConfigError, match=r"demo.layers\['fc'\]: mode cannot be null"):
        Demo(layers={"fc": {"mode": None}})
    with pytest.raises(ConfigError, match=r"demo.layers must be a mapping"):
        Demo(layers=["fc"])


def test_unmatched_pattern_warns_once_with_the_layer_names():
    cfg = Demo(layers={"conv*": {"count": 2}, "fcc": {"count": 3}, "fc": {"count": 1}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg.policy.warn_unmatched(cfg, ["fc", "fc.0", "head"])
    lines = [str(w.message) for w in caught]
    assert lines == [
        "demo: layer pattern 'conv*' matches no layer; layers are: fc, fc.0, head",
        "demo: layer pattern 'fcc' matches no layer; layers are: fc, fc.0, head",
    ]


# -- old spellings ------------------------------------------------------------------------

def test_scalar_spelling_reads_as_the_new_form_with_one_deprecation_line():
    with pytest.warns(DeprecationWarning) as caught:
        old = Demo(layers={"fc*": 8, "head": None, "conv": {"count": 2}})
    assert len(caught) == 1
    assert str(caught[0].message) == (
        'demo: `layers: {"fc*": 8, head: null, conv: {count: 2}}` is deprecated and will be '
        'refused in the next release; write `layers: {"fc*": {count: 8}, head: {skip: true}, '
        'conv: {count: 2}}`')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new form is silent
        new = Demo(layers={"fc*": {"count": 8}, "head": {"skip": True}, "conv": {"count": 2}})
    assert old == new
    for name in ("fc1", "head", "conv", "conv.0", "other"):
        assert old.at(name) == new.at(name)


def test_round_trip_through_a_dict_keeps_the_policy():
    cfg = Demo(layers={"fc": {"mode": "exact", "bits": 4}, "x": {"skip": True}})
    again = Demo.from_dict(cfg.to_dict())
    assert again == cfg and again.at("fc").spec.bits == 4 and again.at("x") is None
    assert cfg.to_dict()["layers"] == {"fc": {"mode": "exact", "bits": 4}, "x": {"skip": True}}


def test_flow_quotes_globs():
    assert flow({"layer1.*": {"ratio": 0.2}, "fc": None}) == '{"layer1.*": {ratio: 0.2}, fc: null}'
