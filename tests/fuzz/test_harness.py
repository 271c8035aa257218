"""edgeopt.fuzz.run_case classifies what a loader does: each outcome is reachable, so a
fuzz test that passes has seen none of the bad ones."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from edgeopt.core.errors import DataError
from edgeopt.fuzz import LOADERS, Loader, Tree, run_case
from edgeopt.fuzz.mutate import mutated, mutated_tree, mutated_zip, rezip, zip_members

TREE = Tree({"data.bin": b"\x00\x01"}, "data.bin")


def _outcome(load, root, check=lambda value: None, limit=5.0):
    return run_case(Loader("t", lambda: None, load, check), TREE, root, limit=limit)


def _key_error(path):
    raise KeyError("x")


def _two_lines(path):
    raise DataError(f"{path}: bad\nsecond line")


def _nameless(path):
    raise DataError("bad data")


def _clear(path):
    raise DataError(f"{path}: bad data")


def _write_beside(path):
    (path.parent / "cache.bin").write_bytes(b"")


def _write_tmp(path):
    tempfile.mkstemp()


def _write_cwd(path):
    Path("out.txt").write_text("x")


def _fail_check(value):
    raise AssertionError("garbage")


@pytest.mark.parametrize(("load", "check", "outcome"), [
    (lambda path: path.read_bytes(), lambda value: None, "ok"),
    (_clear, lambda value: None, "clear"),
    (_key_error, lambda value: None, "unhandled"),
    (_two_lines, lambda value: None, "unhandled"),
    (_nameless, lambda value: None, "unhandled"),
    (lambda path: None, _fail_check, "unhandled"),
    (_write_beside, lambda value: None, "stray"),
    (_write_tmp, lambda value: None, "stray"),
    (_write_cwd, lambda value: None, "stray"),
])
def test_each_outcome_is_reached(tmp_path, load, check, outcome):
    cwd = os.getcwd()
    assert _outcome(load, tmp_path, check).outcome == outcome
    assert os.getcwd() == cwd and not any(tmp_path.iterdir())  # restored, cleaned up


def test_a_loader_past_the_limit_is_a_hang_even_if_it_catches_exception(tmp_path):
    def stubborn(path):
        try:
            time.sleep(5)
        except Exception:  # the time limit must not be swallowed by a loader's own except
            return None

    started = time.perf_counter()
    assert _outcome(stubborn, tmp_path, limit=0.2).outcome == "hang"
    assert time.perf_counter() - started < 2


def _drawn(strategy, n=50) -> list:
    seen = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def draw(value):
        seen.append(value)

    draw()
    return seen


def test_byte_mutations_almost_always_change_the_seed():
    seed = bytes(range(64))
    drawn = _drawn(mutated(seed))
    assert sum(d != seed for d in drawn) >= 0.8 * len(drawn)


def test_zip_mutations_mostly_stay_readable_zips_with_other_members():
    members = {"a/x.json": b'{"k": 1}', "a/data": bytes(range(32))}
    readable = changed = 0
    drawn = _drawn(mutated_zip(rezip(members)))
    for archive in drawn:
        try:
            found = zip_members(archive)
        except Exception:  # noqa: BLE001 - a byte edit after the rezip may break the zip
            continue
        readable += 1
        changed += found != members
    assert readable >= 0.5 * len(drawn) and changed >= 0.8 * readable


def test_tree_mutations_almost_always_change_the_tree():
    tree = {"a": [1, 2], "b": {"c": "d"}}
    drawn = _drawn(mutated_tree(tree))
    assert sum(t != tree for t in drawn) >= 0.8 * len(drawn)


def test_every_issue_14_format_has_a_loader():
    assert set(LOADERS) == {"npz", "inputs", "idx", "images", "onnx", "pt2", "torchscript",
                            "manifest", "recipe", "text"}
    assert zip_members(rezip({"x": b"1"})) == {"x": b"1"}
