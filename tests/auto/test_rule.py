"""The pick rule of --precision auto (issue 4) on injected measurements: the fastest
within tolerance wins, never one slower than fp32 at any batch, fp32 on a tie."""

from __future__ import annotations

import pytest

from edgeopt.auto import AutoOptions, Candidate, choose
from edgeopt.auto.rule import candidate_names, not_built
from edgeopt.compile.targets import get_target
from edgeopt.core.errors import ConfigError


def cand(name, acc, p1, p32, size=1000, **kw) -> Candidate:
    return Candidate(name=name, precision=name, accuracy=acc, latency_ms={1: p1, 32: p32},
                     size_bytes=size, **kw)


def test_fastest_within_tolerance_wins():
    cands = [cand("fp32", 90.0, 1.0, 10.0), cand("int8", 89.6, 0.5, 4.0, 300),
             cand("w4a8", 88.0, 0.3, 3.0, 200)]
    assert choose(cands, 0.5).name == "int8"
    assert [c.picked for c in cands] == [False, True, False]
    assert "2.00x at batch 1" in cands[1].why and "2.50x at batch 32" in cands[1].why
    assert "2.00 points below fp32 (tolerance 0.5)" in cands[2].why


def test_int8_slower_than_fp32_at_any_batch_is_never_shipped():
    # Faster at batch 1 and within tolerance, but slower at batch 32: fp32 ships.
    cands = [cand("fp32", 90.0, 1.0, 10.0), cand("int8", 90.0, 0.8, 10.5, 300)]
    assert choose(cands, 0.5).name == "fp32"
    assert "slower than fp32 at batch 32 (10.500 vs 10.000 ms)" in cands[1].why
    assert "no quantized candidate" in cands[0].why


def test_fp32_wins_a_tie():
    cands = [cand("fp32", 90.0, 1.0, 10.0), cand("int8", 91.0, 1.0, 5.0, 300)]
    assert choose(cands, 0.5).name == "fp32"
    assert cands[1].why.startswith("no faster than fp32 at batch 1")


def test_tolerance_is_inclusive_and_a_faster_second_candidate_is_explained():
    cands = [cand("fp32", 90.0, 1.0, 10.0), cand("int8", 89.5, 0.6, 5.0, 300),
             cand("w4a8", 89.5, 0.4, 6.0, 200)]
    assert choose(cands, 0.5).name == "w4a8"
    assert "but w4a8 is faster at batch 1 (0.600 vs 0.400 ms)" in cands[1].why
    assert choose(cands, 0.0).name == "fp32"


def test_unbuilt_candidates_are_skipped_and_fp32_must_come_first():
    cands = [cand("fp32", 90.0, 1.0, 10.0), Candidate(name="int8", error="cannot lower gelu")]
    assert choose(cands).name == "fp32"
    assert cands[1].why == "not measured: cannot lower gelu"
    with pytest.raises(ConfigError, match="fp32 candidate must come first"):
        choose([cand("int8", 90.0, 1.0, 1.0), cand("fp32", 90.0, 1.0, 1.0)])


@pytest.mark.parametrize("kwargs, message", [
    ({"tolerance": -1}, "tolerance must be >= 0"),
    ({"eval_limit": 0}, "eval_limit must be a positive integer"),
    ({"candidates": ("int4",)}, "unknown precision candidate 'int4'"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AutoOptions(**kwargs)


@pytest.mark.parametrize(("target", "backend", "names", "skipped"), [
    # ONNX Runtime packs sub-8-bit weights: w4a8 is worth building, mixed only when asked.
    ("x86_64", "onnxruntime", ["fp32", "int8", "w4a8"], {"mixed"}),
    # TVM stores them as int8: lowbit is listed but not built by default.
    ("x86_64", "tvm", ["fp32", "int8"], {"lowbit"}),
    # A CUDA target: the fp16 TVM converts to.
    ("cuda", "tvm", ["fp32", "fp16"], set()),
])
def test_default_candidates_follow_what_the_backend_can_do(target, backend, names, skipped):
    t = get_target(target)
    assert candidate_names(t, backend, None) == names
    assert set(not_built(t, backend, names)) == skipped
