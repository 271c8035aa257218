"""Recipes: YAML files naming an ordered list of technique configs and how to compile.

```yaml
name: int8
description: one line shown by `edgeopt recipes`
steps:
  - quantize: {weights: {bits: 8}, activations: {observer: percentile}}
compile: {backend: onnxruntime}
```
A step's key names a config class (``STEP_CONFIGS``); its mapping is that
config's fields, validated by ``Config.from_dict``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeopt.compress.cluster import ClusterConfig
from edgeopt.compress.distill.trainer import DistillConfig
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.compress.prune import MagnitudePruneConfig, StructuredPruneConfig
from edgeopt.compress.quantize.equalize import EqualizeConfig
from edgeopt.compress.quantize.mixed import MixedPrecisionConfig
from edgeopt.compress.quantize.qat import QATConfig
from edgeopt.compress.quantize.spec import QuantConfig
from edgeopt.compress.quantize.tensor_split import SplitConfig
from edgeopt.core.config import Config
from edgeopt.core.errors import ConfigError

BUILTIN_DIR = Path(__file__).parent
STEP_CONFIGS: dict[str, type[Config]] = {
    "quantize": QuantConfig,
    "mixed_precision": MixedPrecisionConfig,
    "equalize": EqualizeConfig,
    "split_channels": SplitConfig,
    "qat": QATConfig,
    "distill": DistillConfig,
    "prune": StructuredPruneConfig,
    "sparsify": MagnitudePruneConfig,
    "cluster": ClusterConfig,
    "lowrank": LowRankConfig,
}


@dataclass
class Recipe:
    name: str
    description: str
    steps: list[Config] = field(default_factory=list)
    compile: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        steps = []
        for cfg in self.steps:
            steps.append({step_key(cfg): cfg.to_dict()})
        return {"name": self.name, "description": self.description, "steps": steps,
                "compile": dict(self.compile)}


def step_key(cfg: Config) -> str:
    """The recipe key of a step's config (its exact class; configs may subclass others)."""
    for key, cls in STEP_CONFIGS.items():
        if type(cfg) is cls:
            return key
    return next(k for k, cls in STEP_CONFIGS.items() if isinstance(cfg, cls))


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def parse_recipe(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {source}: expected a mapping at the top level")
    unknown = set(data) - {"name", "description", "steps", "compile"}
    if unknown:
        raise ConfigError(f"recipe {source}: unknown key {sorted(unknown)[0]!r} "
                          f"(valid: name, description, steps, compile)")
    steps = []
    for i, step in enumerate(data.get("steps") or []):
        if not isinstance(step, dict) or len(step) != 1:
            raise ConfigError(f"recipe {source}: step {i + 1} must be one mapping like "
                              f"'quantize: {{...}}'")
        (kind, options), = step.items()
        if kind not in STEP_CONFIGS:
            raise ConfigError(f"recipe {source}: unknown step {kind!r} "
                              f"(valid: {', '.join(STEP_CONFIGS)})")
        steps.append(STEP_CONFIGS[kind].from_dict(options or {}))
    return Recipe(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description", "")),
        steps=steps,
        compile=dict(data.get("compile") or {}),
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
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_recipe(data, str(path))
