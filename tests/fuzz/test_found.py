"""What fuzzing found, one small file each: every one raised a traceback (or an error
naming no file) before its loader was fixed, and must now end in one EdgeoptError line
naming the file. The .pt2 that ran code is tests/core/test_pt2_load.py's."""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
import zlib

import numpy as np
import pytest

from edgeopt.fuzz import LOADERS, Tree, run_case, seeds
from edgeopt.fuzz.mutate import rezip, zip_members


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_header_unclosed() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 1, 4, 4), np.float32))
    # numpy reads the header as Python tokens: an unclosed "{" is a TokenError, no ValueError
    return buf.getvalue().replace(b"}", b" ", 1)


def _idx_folder(images: bytes, gz: bool = False) -> dict[str, bytes]:
    labels = seeds.idx_bytes(np.zeros(2, np.uint8))
    ext = ".gz" if gz else ""
    files = {f"{p}-images-idx3-ubyte{ext}": images for p in ("train", "t10k")}
    return files | {f"{p}-labels-idx1-ubyte{ext}": seeds.gzipped(labels) if gz else labels
                    for p in ("train", "t10k")}


def _damaged_gzip() -> bytes:
    data = bytearray(seeds.gzipped(seeds.idx_bytes(np.arange(32, dtype=np.uint8)
                                                   .reshape(2, 4, 4))))
    data[12] ^= 0xFF  # inside the deflate stream: zlib.error, which is no OSError
    return bytes(data)


def _torchscript_bad_central_directory() -> bytes:
    data = seeds.torchscript_archive()
    at = data.index(b"PK\x01\x02")  # is_zipfile still passes: the end record is intact
    return data[:at] + b"PK\x01\x09" + data[at + 4:]


def _torchscript_string_length(length: int = 3_997_040_648) -> bytes:
    """data.pkl's first string declaring ``length`` bytes (it holds a few): torch's C++
    unpickler took minutes on the 11 kB file fuzzing found."""
    src, buf = zipfile.ZipFile(io.BytesIO(seeds.torchscript_archive())), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                at = next(pos for op, _, pos in pickletools.genops(data)
                          if op.name == "BINUNICODE")
                data = data[:at + 1] + length.to_bytes(4, "little") + data[at + 5:]
            out.writestr(info, data)
    return buf.getvalue()


def _png_short_header() -> bytes:
    data = seeds.png_claiming(4, 4)
    at = data.index(b"IHDR") - 4
    chunk = (5).to_bytes(4, "big") + b"IHDR" + b"\x00" * 5
    chunk += zlib.crc32(b"IHDR" + b"\x00" * 5).to_bytes(4, "big")
    return data[:at] + chunk + data[at + 4 + 4 + 13 + 4:]  # PIL: ValueError, no OSError


def _pt2_without_signature() -> bytes:
    members = zip_members(seeds.pt2_archive())
    name = next(n for n in members if n.endswith("models/model.json"))
    program = json.loads(members[name])
    program["graph_module"]["module_call_graph"][0]["signature"] = None  # ep.module() fails
    return rezip({**members, name: json.dumps(program).encode()})


def _manifest(text: bytes, model: bytes | None = None) -> Tree:
    model = model if model is not None else seeds.onnx_model()
    return Tree({"art/manifest.json": text, "art/model.onnx": model}, "art")


def _valid_manifest(**changes) -> bytes:
    return json.dumps({**seeds.manifest_for(seeds.onnx_model()), **changes}).encode()


FOUND = {
    "npz-bad-zip": ("npz", Tree({"d.npz": b"PK\x03\x04" + b"\x00" * 40}, "d.npz")),
    "npz-crc": ("npz", Tree({"d.npz": _npz(x=np.zeros((4, 2, 2)), y=np.arange(4))
                             .replace(b"\x00" * 8, b"\x01" * 8, 1)}, "d.npz")),
    "npz-timedelta-samples": ("npz", Tree({"d.npz": _npz(x=np.arange(16).reshape(4, 2, 2)
                                                         .astype("m8[s]"),
                                                         y=np.arange(4))}, "d.npz")),
    "npz-one-sample": ("npz", Tree({"d.npz": _npz(x=np.arange(4).reshape(1, 2, 2), y=[0])},
                                   "d.npz")),
    "inputs-npy-header": ("inputs", Tree({"image.npy": _npy_header_unclosed()})),
    "idx-damaged-gzip": ("idx", Tree(_idx_folder(_damaged_gzip(), gz=True))),
    "idx-nan-images": ("idx", Tree(_idx_folder(seeds.idx_bytes(
        np.array([[[np.nan, 1.0]], [[2.0, 3.0]]]), 0x0E)))),
    "images-bomb-header": ("images", Tree({"cat/a.png": seeds.png_claiming(20000, 20000),
                                           "dog/b.png": seeds.png_claiming(20000, 20000)})),
    "images-short-header": ("images", Tree({"cat/a.png": _png_short_header(),
                                            "dog/b.png": _png_short_header()})),
    "pt2-no-signature": ("pt2", Tree({"m.pt2": _pt2_without_signature()}, "m.pt2")),
    "torchscript-central-directory": ("torchscript", Tree(
        {"m.pt": _torchscript_bad_central_directory()}, "m.pt")),
    "torchscript-string-length": ("torchscript", Tree(
        {"m.pt": _torchscript_string_length()}, "m.pt")),
    "manifest-a-list": ("manifest", _manifest(b"[]")),
    "manifest-deep": ("manifest", _manifest(b"[" * 100_000 + b"]" * 100_000)),
    "manifest-no-inputs": ("manifest", _manifest(_valid_manifest(inputs=None))),
    "manifest-input-without-name": ("manifest", _manifest(_valid_manifest(inputs=[{}]))),
    "manifest-record-dtype": ("manifest", _manifest(_valid_manifest(
        outputs=[{"name": "y", "dtype": {"a": 1}}]))),
    "manifest-resigned-damaged-model": ("manifest", _manifest(
        json.dumps(seeds.manifest_for(b"not onnx")).encode(), b"not onnx")),
    "recipe-not-utf8": ("recipe", Tree({"r.yaml": b"name: \xff\xfe"}, "r.yaml")),
    "recipe-deep": ("recipe", Tree({"r.yaml": b"[" * 5000 + b"]" * 5000}, "r.yaml")),
    "recipe-steps-not-a-list": ("recipe", Tree({"r.yaml": b"steps: 5"}, "r.yaml")),
    "recipe-null-int": ("recipe", Tree({"r.yaml": b"steps: [{quantize: {calib_size: null}}]"},
                                       "r.yaml")),
    "recipe-list-percentile": ("recipe", Tree(
        {"r.yaml": b"steps: [{quantize: {activations: {percentile: [1]}}}]"}, "r.yaml")),
    "recipe-option-names-file": ("recipe", Tree(
        {"r.yaml": b"steps: [{quantize: {calib_size: [1]}}]"}, "r.yaml")),
    "text-deep-json": ("text", Tree({"d.jsonl": b"[" * 100_000}, "d.jsonl")),
    "text-newline-in-header": ("text", Tree({"d.csv": b'"x\ny"\n1\n'}, "d.csv")),
    "text-newline-in-key": ("text", Tree({"d.jsonl": b'{"a\\nb": 1}\n'}, "d.jsonl")),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_each_found_case_is_one_clear_line(case, root):
    name, tree = FOUND[case]
    result = run_case(LOADERS[name], tree, root)
    assert result.outcome == "clear", result.detail


def test_a_damaged_debug_pickle_is_one_line_not_a_segfault(tmp_path):
    """torch.jit.load segfaulted on this archive (its *.debug_pkl members damaged by
    fuzzing): run in a child process, so that a regression fails this test, not pytest."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).parent / "data" / "torchscript-debug-pkl-segv.pt"
    code = ("import sys\nfrom edgeopt.core.errors import ModelLoadError\n"
            "from edgeopt.core.model import load_model\n"
            f"try:\n    load_model({str(path)!r})\nexcept ModelLoadError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{path} is not a valid TorchScript file")
