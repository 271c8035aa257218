"""Case strategies of the data loaders: ``.npz`` (``load_dataset`` and the multi-input
``load_inputs``), IDX folders, image folders and text files.

Each mostly yields nearly-valid input (one array, field or byte wrong), since that is what
reaches deep into a loader; valid input is a case too, so that a loader refusing good
files shows as a drop in ``ok``.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeopt.fuzz import seeds
from edgeopt.fuzz.harness import Tree
from edgeopt.fuzz.mutate import (
    EDGE_INTS,
    JSON_VALUES,
    NASTY_JSON,
    mutated,
    sometimes_mutated,
)

TEXTS = (st.text(max_size=20) | st.sampled_from(["", " ", "a,b", 'say "hi"', "x\ny", "\t",
                                                  "\u2028", "\ufeff", "0", "-1", "héllo"]))

# --------------------------------------------------------------------------- npz

DTYPES = ["u1", "i1", "u2", "i4", "i8", "f2", "f4", "f8", "c8", "?", "U3", "S2", "m8[s]",
          "M8[D]"]
NPZ_KEYS = ["x", "y", "x_train", "y_train", "x_test", "y_test"]


@st.composite
def _array(draw, shape, dtype=None):
    dtype = dtype or draw(st.sampled_from(DTYPES))
    return draw(hnp.arrays(np.dtype(dtype), shape))


@st.composite
def npz_cases(draw) -> Tree:
    n, h, w = draw(st.integers(0, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    arrays = {}
    for prefix in draw(st.sampled_from([("",), ("_train", "_test"), ("", "_train")])):
        shape = draw(st.sampled_from([(n, h, w), (n, 1, h, w), (n, 3, h, w), (n, h, w, 3),
                                      (n,), (), (n, h, w, 2, 2)]))
        x_dtype = draw(st.sampled_from(["u1", "u1", "f4"]) | st.sampled_from(DTYPES))
        arrays["x" + prefix] = draw(_array(shape, x_dtype))
        y_len = draw(st.sampled_from([n, n, n, n + 1, 0]))
        y_dtype = draw(st.sampled_from(["i8", "i8", "u1", "f4"]) | st.sampled_from(DTYPES))
        if y_dtype == "i8":
            arrays["y" + prefix] = np.asarray(draw(st.lists(
                st.integers(0, 9) | st.sampled_from(EDGE_INTS), min_size=y_len,
                max_size=y_len)), dtype=np.int64)
        else:
            arrays["y" + prefix] = draw(_array((y_len,), y_dtype))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(NPZ_KEYS) | st.text("abxy_/.", max_size=6))
        arrays[key] = draw(_array(draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                        max_side=4))))
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
    return Tree({"data.npz": draw(sometimes_mutated(buf.getvalue()))}, "data.npz")

# A two-input model's data (core.inputs): samples keyed by input name, in one .npz or a
# folder of NAME.npy (split into train/ and test/ or not).
INPUT_KEYS = ["image", "ids", "rate", "y", "x", "image_train", "image_test", "ids_train",
              "ids_test", "y_train", "y_test", "other"]


@st.composite
def inputs_cases(draw) -> Tree:
    n = draw(st.integers(0, 6))
    arrays = {}
    valid = st.sampled_from([["image", "ids", "rate", "y"], ["image", "ids", "rate"],
                             ["image_train", "image_test", "ids_train", "ids_test", "rate",
                              "y_train", "y_test"]])
    keys = st.lists(st.sampled_from(INPUT_KEYS), min_size=1, max_size=5, unique=True)
    for key in draw(valid | keys):
        base = key.split("_")[0]
        shape = {"image": (n, 1, 4, 4), "ids": (n, 3), "rate": (), "y": (n,)}.get(base, (n,))
        if draw(st.integers(0, 4)) == 0:
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        dtype = {"image": "f4", "ids": "i8", "rate": "i8", "y": "i8"}.get(base, "f4")
        dtype = draw(st.just(dtype) | st.just(dtype) | st.sampled_from(DTYPES))
        elements = st.integers(0, 9) if base in ("y", "ids", "rate") and dtype == "i8" else None
        arrays[key] = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    if draw(st.booleans()):
        buf = io.BytesIO()
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
        return Tree({"data.npz": draw(sometimes_mutated(buf.getvalue()))}, "data.npz")
    files = {}
    for key, array in arrays.items():
        base, _, split = key.partition("_")
        buf = io.BytesIO()
        np.save(buf, array)
        name = f"{split}/{base}.npy" if split in ("train", "test") else f"{key}.npy"
        files[name] = draw(sometimes_mutated(buf.getvalue()))
    return Tree(files)

# --------------------------------------------------------------------------- IDX

IDX_CODES = [0x08, 0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def _idx_file(draw, array: np.ndarray) -> bytes:
    code = draw(st.sampled_from(IDX_CODES))
    if code in (0x0D, 0x0E) and array.size and draw(st.booleans()):
        array = array.astype(np.float64)
        array.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.5]))
    return seeds.idx_bytes(array, code)


@st.composite
def idx_cases(draw) -> Tree:
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sep = draw(st.sampled_from(["-", "."]))
    gz = draw(st.sampled_from(["", "", ".gz"]))
    files = {}
    for prefix in ("train", "t10k"):
        n = draw(st.integers(0, 6))
        images = draw(hnp.arrays(np.uint8, (n, h, w)))
        labels = draw(hnp.arrays(np.uint8, (n + draw(st.sampled_from([0, 0, 0, 1])),),
                                 elements=st.integers(0, 9)))
        for kind, array, ndim in (("images", images, 3), ("labels", labels, 1)):
            data = draw(_idx_file(array))
            files[f"{prefix}-{kind}{sep}idx{ndim}-ubyte{gz}"] = seeds.gzipped(data) if gz else data
    names = sorted(files)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0:
            files.pop(name, None)
        elif name in files:
            files[name] = draw(mutated(files[name]))
    return Tree(files)

# --------------------------------------------------------------------------- image folders

MODES = ["L", "L", "RGB", "RGB", "RGBA", "P", "1", "I", "F", "LA", "CMYK", "I;16"]
CLASS_NAMES = ["cat", "dog", "0", "1", "a b", ".hidden", "ü", "x.png"]


@st.composite
def image_cases(draw) -> Tree:
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    classes = draw(st.lists(st.sampled_from(CLASS_NAMES), min_size=1, max_size=3, unique=True))
    roots = draw(st.sampled_from([("",), ("",), ("train/", "test/")]))
    files = {}
    for root in roots:
        for name in classes:
            for i in range(draw(st.integers(0 if root == "test/" else 1, 3))):
                size = (h, w) if draw(st.integers(0, 5)) else (h + 1, w)
                pixels = draw(hnp.arrays(np.uint8, size))
                fmt = draw(st.sampled_from(["PNG", "PNG", "JPEG"]))
                mode = draw(st.sampled_from(MODES))
                suffix = draw(st.sampled_from([".png", ".jpg"] if fmt == "PNG" else [".jpg",
                                                                                   ".JPEG"]))
                files[f"{root}{name}/{i}{suffix}"] = seeds.image_bytes(pixels, mode, fmt)
    names = sorted(files)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["edit", "edit", "empty", "text", "claim"]))
        if kind == "edit":
            files[name] = draw(mutated(files[name]))
        elif kind == "claim":  # a header claiming a size far beyond its data
            files[name] = seeds.png_claiming(draw(st.sampled_from([20000, 9000, 0, 2**31])),
                                             draw(st.sampled_from([20000, 1, 2**31 - 1])))
        elif kind == "empty":
            files[name] = b""
        else:
            files[name.rsplit("/", 1)[0] + "/notes.txt"] = b"not an image"
    return Tree(files)

# --------------------------------------------------------------------------- text data

SPLITS = st.sampled_from(["train", "test", "", None, "valid", 1])
LABELS = st.sampled_from([0, 1, 2, -1, "pos", "neg", None, True, 1.5, [1]]) | st.integers()


@st.composite
def _jsonl(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind < 7:
            row = {"text": draw(TEXTS | JSON_VALUES if kind == 6 else TEXTS)}
            if draw(st.booleans()):
                row["label"] = draw(LABELS)
            if draw(st.integers(0, 3)) == 0:
                row["split"] = draw(SPLITS)
            lines.append(json.dumps(row))
        elif kind == 7:
            lines.append(json.dumps(draw(JSON_VALUES)))
        elif kind == 8:
            lines.append(draw(st.sampled_from(NASTY_JSON)))
        else:
            lines.append(draw(TEXTS))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode()


@st.composite
def _table(draw, delimiter: str) -> bytes:
    header = draw(st.permutations(["text", "label", "split", "x"]))[:draw(st.integers(0, 4))]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)
    if draw(st.integers(0, 5)):
        writer.writerow(header)
    for _ in range(draw(st.integers(0, 8))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        row = [draw(TEXTS | st.sampled_from(["0", "1", "2", "pos", "train", "test"]))
               for _ in range(max(width, 0))]
        writer.writerow(row)
    return buf.getvalue().encode()


@st.composite
def text_cases(draw) -> Tree:
    suffix = draw(st.sampled_from([".jsonl", ".csv", ".tsv", ".txt"]))
    if suffix == ".jsonl":
        data = draw(_jsonl())
    elif suffix == ".txt":
        data = "\n".join(draw(st.lists(TEXTS, max_size=8))).encode()
    else:
        data = draw(_table("," if suffix == ".csv" else "\t"))
    if draw(st.integers(0, 5)) == 0:
        data = b"\xef\xbb\xbf" + data  # a byte-order mark, as spreadsheets write
    name = "data" + draw(st.sampled_from([suffix, suffix.upper()]))
    return Tree({name: draw(sometimes_mutated(data))}, name)
