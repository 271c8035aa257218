"""Hypothesis strategies that damage valid data: bytes, zip archives, JSON-like trees.

Byte edits find the parsers' bounds checks; zip edits (one member changed, dropped or
added, the archive rewritten) get past the zip's own checksums to the formats inside;
tree edits (a value replaced by any JSON value, a key dropped or added) keep the file
parseable and test what the loader does with well-formed nonsense.
"""

from __future__ import annotations

import io
import zipfile

from hypothesis import strategies as st

# Values that sit on the edges parsers get wrong: sizes, signs, widths.
EDGE_INTS = [0, 1, -1, 2, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
             -(2**31), -(2**63)]
EDGE_BYTES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
              b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"]


def _edit(data: bytes, op: tuple) -> bytes:
    kind, at, arg = op
    at = at % (len(data) + 1)
    if kind == "flip":
        if not data:
            return data
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ (arg % 255 + 1)]) + data[at + 1:]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + arg + data[at:]
    if kind == "overwrite":
        return data[:at] + arg + data[at + len(arg):]
    if kind == "delete":
        return data[:at] + data[at + arg:]
    if kind == "repeat":
        return data[:at] + data[at:at + arg] * 8 + data[at:]
    raise ValueError(kind)


_POS = st.integers(0, 2**20)
_OPS = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 254)),
    st.tuples(st.just("truncate"), _POS, st.none()),
    st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), _POS, st.sampled_from(EDGE_BYTES) | st.binary(max_size=8)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 64)),
    st.tuples(st.just("repeat"), _POS, st.integers(1, 32)),
)


def mutated(seed: bytes, *, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """``seed`` with 1 to ``max_edits`` byte edits (flips, cuts, insertions, edge values)."""
    def apply(ops):
        data = seed
        for op in ops:
            data = _edit(data, op)
        return data

    return st.lists(_OPS, min_size=1, max_size=max_edits).map(apply)


def sometimes_mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` as it is or with byte edits: a valid file is a case too."""
    return st.just(seed) | mutated(seed)


def zip_members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {name: z.read(name) for name in z.namelist()}


def rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@st.composite
def mutated_zip(draw, archive: bytes) -> bytes:
    """``archive`` with one or two members changed, dropped, renamed or added, rewritten
    as a valid zip, and sometimes byte-edited afterwards."""
    members = zip_members(archive)
    names = list(members)
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["edit", "edit", "edit", "drop", "rename", "add", "empty"]))
        if kind == "edit" and name in members:
            members[name] = draw(mutated(members[name]))
        elif kind == "drop":
            members.pop(name, None)
        elif kind == "rename" and name in members:
            members[name + draw(st.sampled_from(["x", "/", ".json", "/../evil"]))] = \
                members.pop(name)
        elif kind == "add":
            members[draw(st.sampled_from([name + ".extra", "archive/extra", "../escape",
                                          "/abs"]))] = draw(st.binary(max_size=64))
        elif kind == "empty" and name in members:
            members[name] = b""
    data = rezip(members)
    return draw(st.just(data) | mutated(data, max_edits=2))


# Well-formed JSON that breaks parsers by size or depth rather than syntax.
NASTY_JSON = ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
              '"' + "\\u0000" * 1000 + '"', "1e999999", "-0", "NaN", "Infinity"]

JSON_LEAVES = (st.none() | st.booleans() | st.sampled_from(EDGE_INTS) | st.integers()
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
               | st.sampled_from(["", "N", "..", "../x", "/etc/passwd", "model.onnx",
                                  "float32", "int8", "onnxruntime", "tvm", "nope"]))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=8,
)


def _paths(tree, prefix=()) -> list[tuple]:
    """Every key path into a nest of dicts and lists, the root included."""
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += _paths(value, (*prefix, i))
    return found


def _replace(tree, path: tuple, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(tree)]


def _drop(tree, path: tuple):
    if len(path) == 1:
        if isinstance(tree, dict):
            return {k: v for k, v in tree.items() if k != path[0]}
        return [v for i, v in enumerate(tree) if i != path[0]]
    head = path[0]
    if isinstance(tree, dict):
        return {**tree, head: _drop(tree[head], path[1:])}
    return [_drop(v, path[1:]) if i == head else v for i, v in enumerate(tree)]


KEYS = st.text(max_size=10)


@st.composite
def mutated_tree(draw, tree, *, keys=KEYS):
    """``tree`` (plain JSON-like data) with 1 to 3 values replaced, dropped, or added."""
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if kind == "drop" and path:
            tree = _drop(tree, path)
        elif kind == "add":
            target = _get(tree, path)
            if isinstance(target, dict):
                tree = _replace(tree, path, {**target, draw(keys): draw(JSON_VALUES)})
            elif isinstance(target, list):
                tree = _replace(tree, path, [*target, draw(JSON_VALUES)])
        else:
            tree = _replace(tree, path, draw(JSON_VALUES))
    return tree


def _get(tree, path: tuple):
    for key in path:
        tree = tree[key]
    return tree
