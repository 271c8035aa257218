"""Recipes: YAML files naming an ordered list of technique configs and how to compile.

```yaml
name: int8
description: one line shown by `edgeopt recipes`
steps:
  - quantize: {weights: {bits: 8}, activations: {observer: percentile}}
compile: {backend: onnxruntime}
```
A step's key is the name its technique registered (``core.registry``); its
mapping is that config's fields, validated by ``Config.from_dict``. The
``compile`` mapping is a ``CompileSection``, validated the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import edgeopt.compress  # noqa: F401  (registers every technique's step)
from edgeopt.compile.backends.registry import DEFAULT_BACKEND, get_backend
from edgeopt.core.config import Config
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import step_config, step_name

BUILTIN_DIR = Path(__file__).parent


@dataclass(frozen=True, kw_only=True)
class CompileSection(Config):
    """A recipe's ``compile:`` mapping: how its artifact is built."""

    backend: str = DEFAULT_BACKEND

    def __post_init__(self) -> None:
        try:
            get_backend(self.backend)
        except ConfigError as exc:
            raise ConfigError(f"compile.backend: {exc}") from None


@dataclass
class Recipe:
    name: str
    description: str
    steps: list[Config] = field(default_factory=list)
    compile: CompileSection = field(default_factory=CompileSection)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        steps = [{step_name(cfg): cfg.to_dict()} for cfg in self.steps]
        return {"name": self.name, "description": self.description, "steps": steps,
                "compile": self.compile.to_dict()}


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def parse_recipe(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {source}: expected a mapping at the top level")
    unknown = set(data) - {"name", "description", "steps", "compile"}
    if unknown:
        raise ConfigError(f"recipe {source}: unknown key {sorted(unknown)[0]!r} "
                          f"(valid: name, description, steps, compile)")
    listed = data.get("steps") or []
    if not isinstance(listed, list):
        raise ConfigError(f"recipe {source}: steps must be a list of steps, got "
                          f"{type(listed).__name__} {listed!r:.60}")
    steps = []
    for i, step in enumerate(listed):
        if not isinstance(step, dict) or len(step) != 1:
            raise ConfigError(f"recipe {source}: step {i + 1} must be one mapping like "
                              f"'quantize: {{...}}'")
        (kind, options), = step.items()
        config = step_config(kind, f"recipe {source}: ")
        try:
            steps.append(config.from_dict(options or {}))
        except ConfigError as exc:  # the config names the option, not the file it is in
            raise ConfigError(f"recipe {source}: step {i + 1} ({kind}): {exc}") from None
    try:
        section = CompileSection.from_dict(data.get("compile") or {})
    except ConfigError as exc:
        raise ConfigError(f"recipe {source}: compile: {exc}") from None
    return Recipe(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description", "")),
        steps=steps,
        compile=section,
        source=source,
    )


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A built-in recipe by name, or a YAML file."""
    builtin = builtin_recipes()
    key = str(name_or_path)
    path = builtin.get(key)
    if path is None:
        path = Path(key)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise ConfigError(f"unknown recipe {key!r} (built-in: {', '.join(builtin)}; "
                              f"or a path to a .yaml file)")
    try:
        data = yaml.safe_load(path.read_bytes())  # bytes: yaml reads the encoding it finds
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # the parser recurses per level of "[[[[..." or "- - - -"
        raise ConfigError(f"recipe {path} is not valid YAML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"recipe {path} cannot be read: {exc.strerror or exc}") from None
    return parse_recipe(data, str(path))
