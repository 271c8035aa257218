"""The fault cases bench/reliability.py counts, each run through edgeopt's own code path.

Every case returns a ``Case``: whether it ended as specified (one clear error line, or the
success it stands for), whether it raised anything but an EdgeoptError (unhandled), and
what it lost (a file that was there before, changed or gone), left half-written (an
``--out`` that is neither absent nor a verified artifact) or left stray (anything new
beside ``--out``, or the marker a pickle would have made).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.interrupt import artifact_state, cli_command, environment, leftovers, workload


@dataclass
class Case:
    name: str
    clear: bool
    unhandled: bool = False
    lost: bool = False
    half_written: bool = False
    stray: bool = False
    note: str = ""


def _one_error_line(err: str) -> bool:
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ": error: " in ln]
    return (len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err)


def cli_case(name: str, argv: list[str], place: Path, out: Path) -> Case:
    """``edgeopt optimize`` in-process, expected to refuse with one line; ``place`` is the
    folder whose other files must be untouched (``out`` included, when it was there)."""
    from edgeopt.cli import main

    before, existed = _snapshot(place), out.exists()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main([*argv, "--out", str(out)])
    except Exception:  # anything main() lets out is an unhandled exception
        return Case(name, False, unhandled=True, note=traceback.format_exc().splitlines()[-1])
    after = _snapshot(place)
    lost = any(after.get(k) != v for k, v in before.items())
    half = not existed and artifact_state(out) != "absent"
    return Case(name, rc != 0 and _one_error_line(err.getvalue()), lost=lost, half_written=half,
                stray=bool(set(after) - set(before)), note=err.getvalue().strip()[-120:])


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` -> its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------ bad data


def bad_data(root: Path) -> list[Case]:
    argv = workload(root)  # the tiny model, 5 classes, 1x8x8
    rng = np.random.default_rng(0)
    good = rng.random((64, 1, 8, 8)).astype(np.float32)
    cases = []
    for name, edit in (("NaN", lambda x, y: x.__setitem__((3, 0, 2, 2), np.nan)),
                       ("Inf", lambda x, y: x.__setitem__((5, 0, 1, 1), np.inf)),
                       ("constant", lambda x, y: x.fill(0.5)),
                       ("labels beyond the outputs", lambda x, y: y.__setitem__(7, 9))):
        x, y = good.copy(), np.arange(64) % 5
        edit(x, y)
        place = root / f"data-{name.split()[0]}"
        place.mkdir()
        data = place / "bad.npz"
        np.savez(data, x_train=x, y_train=y, x_test=good[:16], y_test=np.arange(16) % 5)
        args = [*argv[:argv.index("--data") + 1], str(data), *argv[argv.index("--data") + 2:]]
        cases.append(cli_case(name, args, place, place / "art"))
    return cases


# ------------------------------------------------------------------------------- outputs


def destinations(root: Path) -> list[Case]:
    argv = workload(root)
    cases = [cli_case("unwritable (/proc)", argv, root, Path("/proc/edgeopt-reliability/art"))]
    place = root / "dest"
    place.mkdir()
    (place / "file").write_text("not a folder")
    cases.append(cli_case("invalid (a file as parent)", argv, place, place / "file" / "art"))
    cases.append(cli_case("a file as --out (--force)", [*argv, "--force"], place,
                          place / "file"))
    kept = place / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("keep")
    cases.append(cli_case("existing --out, no --force", argv, place, kept))
    cases.append(full_disk(root / "full"))
    return cases


def full_disk(place: Path, limit: int = 1500) -> Case:
    """RLIMIT_FSIZE stands in for a full disk: the artifact's first file passes the limit."""
    place.mkdir()
    (place / "tmp").mkdir()
    argv = [*workload(place), "--out", str(place / "art")]

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(cli_command(argv), env=environment(place / "tmp"), text=True,
                          capture_output=True, preexec_fn=limit_file_size, timeout=600)
    stray = leftovers(place, {"art", "tmp", "data.npz"})
    return Case(f"full (RLIMIT_FSIZE {limit} B)",
                proc.returncode != 0 and _one_error_line(proc.stderr)
                and "cannot write" in proc.stderr,
                unhandled="Traceback" in proc.stderr, half_written=(place / "art").exists(),
                stray=bool(stray), note=proc.stderr.strip().splitlines()[-1][-120:])


# ---------------------------------------------------------------- concurrent same --out


def concurrent(root: Path, pairs: int = 2) -> list[Case]:
    """Two runs at one --out, started together (and the second 1 s later): one writes the
    artifact, the other refuses in one line."""
    cases = []
    for i in range(pairs):
        place = root / f"pair{i}"
        place.mkdir(parents=True)
        (place / "tmp").mkdir()
        argv = [*workload(place), "--out", str(place / "art")]
        procs = []
        for j in range(2):
            procs.append(subprocess.Popen(cli_command(argv), env=environment(place / "tmp"),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True))
            if j == 0:
                time.sleep(i)
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        winners = [err for rc, err in results if rc == 0]
        losers = [err for rc, err in results if rc != 0]
        clear = (len(winners) == 1 and len(losers) == 1 and _one_error_line(losers[0])
                 and ("another edgeopt run" in losers[0] or "already exists" in losers[0]))
        state = artifact_state(place / "art")
        cases.append(Case(f"pair {i} ({i} s apart)", clear,
                          unhandled=any("Traceback" in err for _, err in results),
                          half_written=state != "complete",
                          stray=bool(leftovers(place, {"art", "tmp", "data.npz"})),
                          note=(losers[0].strip().splitlines()[-1] if losers else "no refusal")))
    return cases


# ------------------------------------------------------------------------------ security


def _expect_refusal(name: str, call, marker: Path | None = None) -> Case:
    from edgeopt.core.errors import EdgeoptError

    try:
        call()
    except EdgeoptError as exc:
        stray = marker is not None and marker.exists()
        return Case(name, "\n" not in str(exc), stray=stray, note=str(exc)[-120:])
    except Exception:
        return Case(name, False, unhandled=True, note=traceback.format_exc().splitlines()[-1])
    return Case(name, False, note="accepted")


def security(root: Path) -> list[Case]:
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    import edgeopt
    from edgeopt.core.model import load_model
    from edgeopt.core.onnx_import import read_onnx
    from edgeopt.runtime import load
    from edgeopt.testing import tiny_cnn

    cases = []
    # ONNX external data naming a file outside the model's folder.
    (root / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    (root / "m").mkdir()
    onnx.save(helper.make_model(graph), root / "m" / "model.onnx")
    cases.append(_expect_refusal("ONNX external data outside the folder",
                                 lambda: read_onnx(str(root / "m" / "model.onnx"))))

    # An artifact with a symbolic link, and one whose manifest names a path outside it.
    art = edgeopt.compile(tiny_cnn(), target="x86_64", input_shape=[1, 8, 8],
                          out=root / "art").path
    linked = Path(shutil.copytree(art, root / "linked"))
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(art / "model.onnx")
    cases.append(_expect_refusal("symbolic link inside an artifact", lambda: load(linked)))
    escaping = Path(shutil.copytree(art, root / "escaping"))
    shutil.copy(art / "model.onnx", root / "outside.onnx")
    manifest = json.loads((escaping / "manifest.json").read_text())
    manifest["model_file"] = "../outside.onnx"
    manifest["files"] = {"../outside.onnx": manifest["files"].pop("model.onnx"),
                         **manifest["files"]}
    (escaping / "manifest.json").write_text(json.dumps(manifest))
    cases.append(_expect_refusal("manifest path outside the artifact", lambda: load(escaping)))

    # Pickles: a full pickled model and a state dict holding an object, each carrying a
    # trap that makes a folder if anything unpickles it.
    marker = root / "unpickled"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    model.trap = _Trap(str(marker))
    torch.save(model, root / "full.pt")
    cases.append(_expect_refusal("pickled full model", lambda: load_model(str(root / "full.pt")),
                                 marker))
    torch.save({"state": tiny_cnn().state_dict(), "trap": _Trap(str(marker))}, root / "w.pt")
    cases.append(_expect_refusal(
        "pickled object in --weights",
        lambda: load_model("edgeopt.testing:tiny_cnn", weights=str(root / "w.pt")), marker))
    return cases


class _Trap:
    """Unpickling this makes a folder: proof that a loader ran pickle on the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
