import pytest

from edgeopt.compress.quantize.spec import Int8Config, QuantConfig, QuantSpec
from edgeopt.core.errors import ConfigError


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_bits_outside_2_to_8_refused(bits):
    with pytest.raises(ConfigError, match="2..8"):
        QuantSpec(bits=bits)


def test_ranges_for_each_bit_width():
    assert (QuantSpec(bits=8).qmin, QuantSpec(bits=8).qmax) == (-127, 127)
    assert (QuantSpec(bits=4).qmin, QuantSpec(bits=4).qmax) == (-7, 7)
    assert (QuantSpec(bits=2, symmetric=False).qmin, QuantSpec(bits=2, symmetric=False).qmax) == (0, 3)


def test_per_layer_policy_first_match_wins():
    cfg = QuantConfig(layers={"features.0.*": {"bits": 8}, "head": {"skip": True}, "*": {"bits": 4}})
    assert cfg.for_layer("features.0.conv")[0].bits == 8
    assert cfg.for_layer("features.1.conv")[0].bits == 4
    assert cfg.for_layer("head") is None
    assert cfg.precision_label("features.1.conv") == "w4a8"


def test_unknown_override_key_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid: .*act_bits"):
        QuantConfig(layers={"*": {"bitz": 4}})


def test_round_trip_through_dict():
    cfg = Int8Config(layers={"fc": {"bits": 6}}, calib_size=128)
    again = Int8Config.from_dict(cfg.to_dict())
    assert again == cfg


def test_unknown_option_and_bad_enum():
    with pytest.raises(ConfigError, match="unknown option 'calib'"):
        QuantConfig.from_dict({"calib": 3})
    with pytest.raises(ConfigError, match="valid: minmax, percentile, mse, entropy"):
        QuantConfig.from_dict({"activations": {"observer": "kl"}})


def test_pattern_matching_no_layer_warns_with_names():
    cfg = QuantConfig(layers={"nothing.*": {"bits": 4}})
    with pytest.warns(UserWarning, match="matches no layer; layers are: conv1, fc"):
        cfg.check_patterns(["conv1", "fc"])
