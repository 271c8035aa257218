"""core/config.py: typed configs round-trip through plain dicts and YAML, plain values are
coerced to the declared types, and what cannot be is one ConfigError line.

(Named test_config_types, not test_config: tests/compress/lowrank/test_config.py holds
that basename, and the suite has no __init__.py files to tell two apart.)
"""

from __future__ import annotations

import dataclasses
import enum
import warnings

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.core import registry
from edgeopt.core.config import Config, first_match, matches, warn_unmatched
from edgeopt.core.errors import ConfigError


class Mode(str, enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner(Config):
    bits: int = 8
    name: str = "w"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer(Config):
    lr: float = 1e-3
    steps: int = 1
    on: bool = True
    mode: Mode = Mode.FAST
    shape: tuple[int, ...] = ()
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner = dataclasses.field(default_factory=Inner)
    limit: int | None = None


names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
outers = st.builds(
    Outer, lr=floats, steps=st.integers(-10**6, 10**6), on=st.booleans(),
    mode=st.sampled_from(Mode), shape=st.lists(st.integers(0, 512), max_size=4).map(tuple),
    weights=st.dictionaries(names, floats, max_size=3),
    inner=st.builds(Inner, bits=st.integers(1, 16), name=names),
    limit=st.none() | st.integers(1, 10**6))


@settings(max_examples=100, deadline=None)
@given(outers)
def test_to_dict_from_dict_round_trips_through_yaml(cfg):
    plain = cfg.to_dict()
    # Plain data only: an Enum or a tuple left in would not survive safe YAML.
    text = yaml.safe_dump(plain)
    assert Outer.from_dict(yaml.safe_load(text)) == cfg
    assert plain["mode"] in ("fast", "slow") and isinstance(plain["shape"], list)
    assert plain["inner"] == {"bits": cfg.inner.bits, "name": cfg.inner.name}


def test_yaml_spellings_are_coerced_to_the_declared_types():
    cfg = Outer.from_dict({"lr": "1e-4", "steps": 3.0, "mode": "slow", "shape": [1, 8, 8],
                           "weights": {"a": 1}, "inner": {"bits": 4}, "limit": None})
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-4 as a string
    assert cfg.steps == 3 and isinstance(cfg.steps, int)
    assert cfg.mode is Mode.SLOW and cfg.shape == (1, 8, 8)
    assert cfg.weights == {"a": 1.0} and isinstance(cfg.weights["a"], float)
    assert cfg.inner == Inner(bits=4) and cfg.limit is None
    assert Outer.from_dict({"shape": 28}).shape == (28,)  # a scalar is a one-item list


@pytest.mark.parametrize("data, message", [
    ({"steps": 2.5}, r"^Outer.steps: expected int, got 2.5$"),
    ({"lr": "fast"}, r"^Outer.lr: expected a number, got 'fast'$"),
    ({"lr": True}, r"^Outer.lr: expected float, got True$"),
    ({"on": "yes"}, r"^Outer.on: expected bool, got 'yes'$"),
    ({"mode": "medium"}, r"^Outer.mode: unknown value 'medium' \(valid: fast, slow\)$"),
    ({"weights": [1, 2]}, r"^Outer.weights: expected a mapping, got \[1, 2\]$"),
    ({"shape": {"a": 1}}, r"^Outer.shape: expected a list"),
    ({"limit": "ten"}, r"^Outer.limit: expected int, got 'ten'$"),
    ({"inner": {"bitz": 4}}, r"^Inner: unknown option 'bitz' \(valid: bits, name\)$"),
    ({"step": 1}, r"^Outer: unknown option 'step' \(valid: inner, limit, lr, mode, on, shape, "
                  r"steps, weights\)$"),
])
def test_a_value_that_does_not_fit_is_one_line_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message) as err:
        Outer.from_dict(data)
    assert "\n" not in str(err.value)


def test_from_dict_refuses_what_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^Outer: expected a mapping, got \[1\]$"):
        Outer.from_dict([1])


def test_replace_returns_a_changed_copy():
    cfg = Outer(steps=2)
    new = cfg.replace(steps=5)
    assert (cfg.steps, new.steps) == (2, 5) and new.lr == cfg.lr


def _default_step_configs():
    for name in registry.step_names():
        cls = registry.step_config(name)
        try:
            yield name, cls()
        except (ConfigError, TypeError):  # a step with a required option (prune: a ratio)
            continue


def test_every_registered_step_config_round_trips():
    import edgeopt.compress  # noqa: F401  (registers every technique)

    done = []
    for name, cfg in _default_step_configs():
        plain = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
        assert type(cfg).from_dict(plain) == cfg, name
        done.append(name)
    assert len(done) >= 6, done  # quantize, qat, distill, ... construct with defaults


layer = st.lists(names, min_size=1, max_size=4).map(".".join)


@settings(max_examples=200, deadline=None)
@given(layer, names)
def test_a_pattern_covers_the_name_and_its_children_never_siblings(name, child):
    assert matches(name, name) and matches(f"{name}.{child}", name)
    assert not matches(f"{name}{child}", name)  # fc does not cover fc2
    assert not matches(name, f"{name}.{child}")  # nor a child its container


def test_first_match_is_the_first_pattern_in_order():
    assert first_match("layer1.0.conv1", ["fc", "layer1.*", "layer1.0.conv1"]) == "layer1.*"
    assert first_match("layer1.0.conv1", ["layer1.0"]) == "layer1.0"
    assert first_match("fc2", ["fc"]) is None


def test_warn_unmatched_warns_once_per_pattern_that_matches_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_unmatched(["fc", "layr1.*", "nope"], ["layer1.0", "fc"], "q: ")
    messages = [str(w.message) for w in caught]
    assert messages == [
        "q: layer pattern 'layr1.*' matches no layer; layers are: layer1.0, fc",
        "q: layer pattern 'nope' matches no layer; layers are: layer1.0, fc",
    ]
