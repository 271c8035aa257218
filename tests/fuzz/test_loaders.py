"""Fuzzing every user-facing loader (issue 14): each case ends in success or in one
EdgeoptError line naming the file, within the time limit, leaving no file behind.

The cases are ``edgeopt.fuzz.LOADERS``' strategies (valid files damaged one field, member
or byte at a time), the same that bench/fuzz.py counts by the ten thousand. Hypothesis
runs derandomized, without a database: CI sees the same cases on every run, and a failure
is shrunk to a small file and printed with the loader's traceback.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from edgeopt.fuzz import ACCEPTED, LOADERS, run_case

# 200 cases each, every loader: 2,000 loads in about 35 s on 2 idle cores (55 s beside other
# jobs). None needs fewer: the slowest, recipes (7 s: its deep-YAML cases recurse until
# RecursionError), and ONNX (onnxslim and onnx2torch on every valid model, 2 s) both fit.
EXAMPLES = 200
LIMIT_S = 30.0  # per case: a stall under load is not a hang; a loop is, long before


@pytest.mark.parametrize("name", list(LOADERS))
def test_every_case_ends_in_success_or_one_clear_line(name, root):
    loader = LOADERS[name]

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(loader.cases())
    def case(tree):
        result = run_case(loader, tree, root, limit=LIMIT_S)
        assert result.outcome in ACCEPTED, f"{result.outcome}: {result.detail}"

    case()
    assert not any(root.iterdir())  # every sandbox was removed
