import pytest

from edgeopt.compress.prune.structured import StructuredPruneConfig
from edgeopt.core.errors import ConfigError


def test_a_single_string_for_a_list_field_is_a_one_item_list():
    # Before: ``ignore: fc`` in a recipe became ("f", "c") and ignored no layer.
    assert StructuredPruneConfig.from_dict({"ratio": 0.3, "ignore": "fc"}).ignore == ("fc",)
    cfg = StructuredPruneConfig.from_dict({"ratio": 0.3, "ignore": ["fc", "stem*"]})
    assert cfg.ignore == ("fc", "stem*")


@pytest.mark.parametrize("value, message", [
    ({"a": 1}, "expected a list"),
    ("1x28x28", "expected int, got '1x28x28'"),
])
def test_a_list_field_refuses_what_is_not_a_list_of_its_type(value, message):
    with pytest.raises(ConfigError, match=f"StructuredPruneConfig.input_shape: {message}"):
        StructuredPruneConfig.from_dict({"ratio": 0.3, "input_shape": value})
