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


def test_per_layer_spec_mapping_changes_only_those_attributes_of_the_global_spec():
    # The shared policy: weights/activations are fields of the config; a mapping changes
    # those attributes of the global spec, as the short keys do.
    cfg = QuantConfig(layers={"fc": {"weights": {"bits": 4}}, "conv*": {"bits": 4}})
    w_fc, a_fc = cfg.for_layer("fc")
    assert w_fc == cfg.for_layer("conv1")[0]
    assert (w_fc.bits, w_fc.per_channel, w_fc.symmetric) == (4, True, True)  # DEFAULT_WEIGHTS'
    assert a_fc == cfg.activations
    with pytest.raises(ConfigError, match=r"quantize.layers\['fc'\]: bits must be an integer "
                                          r"in 2..8, got 9"):
        QuantConfig(layers={"fc": {"bits": 9}})
    with pytest.raises(ConfigError, match=r"quantize.layers\['fc'\].act_bits: expected int"):
        QuantConfig(layers={"fc": {"act_bits": "eight"}})
    with pytest.raises(ConfigError, match=r"quantize.layers\['fc'\] must be a mapping"):
        QuantConfig(layers={"fc": 4})
