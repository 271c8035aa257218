"""What a device needs to run an artifact: the edgeopt-runtime venv against the full one.

The runtime venv is a fresh venv with only numpy, onnxruntime (the host's versions) and
edgeopt-runtime, pip-installed from runtime/; it is cached in
~/.cache/edgeopt/runtime-venv/<key>, the key hashing the runtime's files and the pins.
The full venv is this interpreter's (sys.prefix) running this checkout. For each: bytes on
disk, ``import edgeopt.runtime`` (median of fresh processes, timed inside each) and the
peak RSS of a fresh process that loads and runs one int8 resnet_small artifact, and one that
tokenizes texts and runs an int8 text artifact (os.wait4's rusage of that child).

    python bench/runtime_footprint.py                   # table, 10 imports
    python bench/runtime_footprint.py --json r.json     # and the figures as JSON
    python bench/runtime_footprint.py --tiny            # a 3-import smoke run (tests)

tests/runtime/test_runtime_dist.py uses the same helpers for the acceptance checks.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIR = REPO / "runtime"
PINS = ("numpy", "onnxruntime", "tokenizers")  # the host's versions: the same releases
# are compared. tokenizers: text artifacts tokenize on the device (runtime/text.py).


class VenvUnavailable(Exception):
    """A venv with pip, or the packages it installs, cannot be had here."""


def cache_dir() -> Path:
    base = os.environ.get("EDGEOPT_CACHE", "~/.cache/edgeopt")
    return Path(base).expanduser() / "runtime-venv"


def _backend():
    spec = importlib.util.spec_from_file_location("build_runtime",
                                                  RUNTIME_DIR / "build_runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in PINS]


def venv_key() -> str:
    """Changes with the runtime's files, its packaging, the pins and the Python."""
    h = hashlib.sha256(f"{sys.version_info[:2]} {pins()}".encode())
    for rel in ["runtime/pyproject.toml", "runtime/build_runtime.py",
                *_backend().runtime_files()]:
        h.update(rel.encode() + (REPO / rel).read_bytes())
    return h.hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd: list, what: str, timeout: float = 600) -> None:
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VenvUnavailable(f"{what}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines()
                 if ln.strip() and not ln.startswith("WARNING")]
        raise VenvUnavailable(f"{what} failed: {lines[-1] if lines else proc.returncode}")


def runtime_venv(*, fresh: bool = False) -> Path:
    """The cached runtime venv, made (~30 s from pip's cache) when missing or stale."""
    venv = cache_dir() / venv_key()
    done = venv / ".complete"  # written last: a half-made venv is made again
    if done.is_file() and not fresh:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run([sys.executable, "-m", "venv", venv], "python -m venv")
        # --no-build-isolation: runtime/'s backend needs nothing, so nothing is fetched.
        _run([venv_python(venv), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", "--no-build-isolation", *pins(), RUNTIME_DIR],
             "pip install of numpy, onnxruntime and runtime/")
    except VenvUnavailable:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    done.write_text(" ".join(pins()) + "\n")
    return venv


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (each inode once, links not followed)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def python_argv(python: Path | str, *, isolated: bool) -> tuple[list[str], dict[str, str]]:
    """The runtime venv runs isolated (-I: no PYTHONPATH, no checkout on sys.path); the
    full one runs this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if isolated:
        return [str(python), "-I"], env
    return [str(python)], {**env, "PYTHONPATH": str(REPO)}


IMPORT_CODE = ("import time; t = time.perf_counter(); import edgeopt.runtime; "
               "print(time.perf_counter() - t)")


def import_seconds(python, *, isolated: bool, repeats: int = 10) -> list[float]:
    """``import edgeopt.runtime`` in ``repeats`` fresh processes, timed inside each."""
    argv, env = python_argv(python, isolated=isolated)
    times = []
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeats):
            out = subprocess.run([*argv, "-c", IMPORT_CODE], capture_output=True, text=True,
                                 env=env, cwd=cwd, timeout=120, check=True)
            times.append(float(out.stdout.split()[-1]))
    return times


RUN_CODE = """
import json, sys
import numpy as np
import edgeopt.runtime
predictor = edgeopt.runtime.load(sys.argv[1])
if sys.argv[2].endswith(".json"):  # texts, for a text artifact: tokenized here
    y = predictor.predict(json.load(open(sys.argv[2])))
else:
    y = predictor.run(np.load(sys.argv[2]))
np.save(sys.argv[3], y)
print(json.dumps({"modules": sorted(sys.modules), "file": edgeopt.runtime.__file__,
                  "predictor": type(predictor).__name__}))
"""


# The measured process is a grandchild: Linux keeps a process's peak RSS across exec, and a
# child spawned straight from this (torch-sized) process would report this one's.
LAUNCH_CODE = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)  # that child's own rusage
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}))
"""


def run_artifact(python, artifact: Path, x_path: Path, y_path: Path, *, isolated: bool) -> dict:
    """Load and run ``artifact`` on ``x_path`` in a fresh process: what it imported, where
    edgeopt.runtime came from, its peak RSS in bytes; the outputs go to ``y_path``."""
    argv, env = python_argv(python, isolated=isolated)
    cmd = [*argv, "-c", LAUNCH_CODE, *argv, "-c", RUN_CODE, str(artifact), str(x_path),
           str(y_path)]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=300)
    lines = proc.stdout.strip().splitlines()
    launch = json.loads(lines[-1]) if lines else {"rc": proc.returncode}
    if proc.returncode != 0 or launch["rc"] != 0:
        err = proc.stderr.strip().splitlines()
        raise RuntimeError(f"running {artifact} failed: {err[-1] if err else '?'}")
    info = json.loads(lines[-2])
    return {**info, "peak_rss_bytes": launch["maxrss_kb"] * 1024}  # Linux: kilobytes


def build_artifact(out: Path, *, width: int = 16, size: int = 28) -> tuple[Path, Path]:
    """An int8 (QDQ, ONNX Runtime) resnet_small artifact and a batch of inputs for it."""
    import numpy as np
    import torch

    import edgeopt
    from edgeopt.zoo.resnet import resnet_small

    torch.manual_seed(0)
    model = resnet_small(width=width).eval()
    calib = torch.rand(32, 1, size, size)
    qmodel = edgeopt.apply(model, edgeopt.Int8Config(), data=[calib])
    artifact = edgeopt.compile(qmodel, target="x86_64", input_shape=[1, size, size],
                               out=out / "int8-resnet", force=True).path
    x_path = out / "x.npy"
    np.save(x_path, np.random.default_rng(0).random((8, 1, size, size), dtype=np.float32))
    return Path(artifact), x_path


TEXTS = ["the cat sat on the mat", "a good day", "the dog sat", "fortune is good",
         "a dog, a cat, a mat.", "is the mat good?", "the cat is good", "a fortune a day"]


def build_text_artifact(out: Path, *, max_length: int = 16) -> tuple[Path, Path]:
    """An int8 text artifact (a tiny random BERT, dynamic int8 MatMuls, its tokenizer.json)
    and a .json list of texts for it: what runtime.text runs with `tokenizers` alone."""
    from edgeopt.compile.text import write_text_artifact
    from edgeopt.compress.quantize.text_int8 import TextInt8Config, quantize_text
    from edgeopt.core.hf import read_folder
    from edgeopt.core.hf.export import export_hf
    from edgeopt.runtime.text import TextTokenizer
    from edgeopt.testing_hf import write_tiny_hf

    (out / "hf").mkdir(parents=True, exist_ok=True)
    folder = read_folder(f"hf:{write_tiny_hf(out / 'hf')}")
    graph, info = export_hf(folder)
    tok = TextTokenizer(folder.tokenizer, max_length=max_length, inputs=info["inputs"])
    qgraph, _ = quantize_text(graph, [tok(TEXTS)], TextInt8Config(activations="dynamic"),
                              log=lambda *_: None)
    artifact = write_text_artifact(out / "int8-text", qgraph, folder, info,
                                   max_length=max_length, precision="int8", force=True)
    texts = out / "texts.json"
    texts.write_text(json.dumps(TEXTS))
    return Path(artifact), texts


def measure(*, repeats: int = 10, width: int = 16, fresh: bool = False) -> dict:
    runtime = runtime_venv(fresh=fresh)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        artifact, x_path = build_artifact(Path(tmp), width=width)
        text_artifact, texts = build_text_artifact(Path(tmp))
        for name, python, isolated, prefix in [
                ("edgeopt-runtime", venv_python(runtime), True, runtime),
                ("full edgeopt", sys.executable, False, Path(sys.prefix))]:
            times = import_seconds(python, isolated=isolated, repeats=repeats)
            run = run_artifact(python, artifact, x_path, Path(tmp) / f"y-{len(rows)}.npy",
                               isolated=isolated)
            text = run_artifact(python, text_artifact, texts,
                                Path(tmp) / f"e-{len(rows)}.npy", isolated=isolated)
            rows[name] = {"venv": str(prefix), "bytes": tree_bytes(prefix),
                          "import_s_median": statistics.median(times), "import_s": times,
                          "peak_rss_bytes": run["peak_rss_bytes"],
                          "text_peak_rss_bytes": text["peak_rss_bytes"],
                          "torch_loaded": "torch" in {*run["modules"], *text["modules"]}}
    full = rows["full edgeopt"]["bytes"]
    rows["edgeopt-runtime"]["bytes_vs_full"] = rows["edgeopt-runtime"]["bytes"] / full
    return {"repeats": repeats, "artifact": f"int8 resnet_small width={width}",
            "text_artifact": "int8 tiny BERT (2 layers, 32 wide), 8 texts", "rows": rows}


def table(result: dict) -> str:
    lines = [f"{'venv':<16} {'on disk':>10} {'import edgeopt.runtime':>22} "
             f"{'peak RSS (load+run)':>20} {'text artifact':>14}"]
    for name, r in result["rows"].items():
        lines.append(f"{name:<16} {r['bytes'] / 2**20:>7.0f} MB "
                     f"{r['import_s_median'] * 1000:>19.0f} ms "
                     f"{r['peak_rss_bytes'] / 2**20:>17.0f} MB "
                     f"{r['text_peak_rss_bytes'] / 2**20:>11.0f} MB")
    share = result["rows"]["edgeopt-runtime"]["bytes_vs_full"]
    lines.append(f"runtime venv / full venv on disk: {share:.1%}; import: median of "
                 f"{result['repeats']} fresh processes; artifacts: {result['artifact']}; "
                 f"{result['text_artifact']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="3 imports, a narrow model")
    ap.add_argument("--fresh", action="store_true", help="rebuild the cached runtime venv")
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # calibration's progress bars
    try:
        result = measure(repeats=3 if args.tiny else args.repeats,
                         width=4 if args.tiny else 16, fresh=args.fresh)
    except VenvUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
