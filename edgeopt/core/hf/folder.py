"""What a Hugging Face folder holds, read without transformers: its config, its tokenizer,
and the pooling sentence-transformers' ``modules.json`` and ``1_Pooling/config.json``
describe. A folder that is not one is refused here in one line, before torch loads it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeopt.core.errors import ConfigError, ModelLoadError

HF_PREFIX = "hf:"
TASKS = ("embedding", "classification")
TOKENIZER_FILE = "tokenizer.json"
POOLINGS = ("mean", "cls")


def is_hf_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_PREFIX)


@dataclass(frozen=True)
class HfFolder:
    path: Path
    config: dict             # config.json
    pooling: str             # mean | cls (embedding task)
    normalize: bool          # a sentence-transformers Normalize module follows the pooling
    tokenizer: Path          # tokenizer.json

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "?")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def read_folder(spec: str | Path, *, task: str = "embedding") -> HfFolder:
    """The folder ``hf:PATH`` names, checked; one-line ``ModelLoadError`` otherwise."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} for a Hugging Face model "
                          f"(valid: {', '.join(TASKS)})")
    raw = str(spec).removeprefix(HF_PREFIX)
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"hf:{raw}: no such folder (hf:PATH names a local transformers "
                             f"folder; there is no hub download)")
    if not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        raise ModelLoadError(f"hf:{raw}: not a transformers model folder (no config.json; "
                             f"found {found})")
    config = _json(path / "config.json")
    if "model_type" not in config:
        raise ModelLoadError(f"hf:{raw}: config.json has no model_type: not a transformers "
                             f"model config")
    weights = [p for p in ("model.safetensors", "pytorch_model.bin") if (path / p).is_file()]
    if not weights:
        raise ModelLoadError(f"hf:{raw}: no weights (model.safetensors or pytorch_model.bin)")
    tokenizer = path / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise ModelLoadError(f"hf:{raw}: no {TOKENIZER_FILE} (the artifact tokenizes with the "
                             f"`tokenizers` library, which needs the fast tokenizer file)")
    pooling, normalize = _pooling(path)
    return HfFolder(path=path, config=config, pooling=pooling, normalize=normalize,
                    tokenizer=tokenizer)


def _pooling(path: Path) -> tuple[str, bool]:
    """sentence-transformers' modules: Pooling's mode and whether Normalize follows. A plain
    transformers folder (no modules.json) mean-pools without normalising."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    try:
        modules = json.loads(modules_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{modules_file}: not readable JSON ({exc})") from None
    types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    normalize = "Normalize" in types
    if "Pooling" not in types:
        return "mean", normalize
    cfg = _json(path / types["Pooling"].get("path", "1_Pooling") / "config.json")
    if cfg.get("pooling_mode_cls_token"):
        return "cls", normalize
    if cfg.get("pooling_mode_mean_tokens", True):
        return "mean", normalize
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    raise ModelLoadError(f"{path}: pooling {', '.join(modes) or 'none'} is not supported "
                         f"(supported: {', '.join(POOLINGS)})")
