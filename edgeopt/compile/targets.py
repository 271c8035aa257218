"""Targets: where an artifact will run, and which backends/precisions serve it."""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.core.errors import ConfigError


@dataclass(frozen=True)
class Target:
    name: str
    arch: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    description: str
    aliases: tuple[str, ...] = ()

    def check(self, backend: str, precision: str) -> None:
        precision = precision_family(precision)
        if backend not in self.backends:
            raise ConfigError(
                f"target {self.name} has no backend {backend!r} (available: {', '.join(self.backends)})"
            )
        if precision not in self.precisions:
            raise ConfigError(
                f"target {self.name} does not support precision {precision!r} "
                f"(supported: {', '.join(self.precisions)})"
            )


def precision_family(label: str) -> str:
    """fp32 / int8 / lowbit: what a target must support to run a model labelled
    ``label`` (w4a8, w4pow2a8 and mixed widths are all lowbit: packed weights)."""
    return label if label in ("fp32", "fp16", "int8") else "lowbit"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("x86_64", "x86_64", ("onnxruntime",), ("fp32", "int8", "lowbit"),
               "x86-64 CPU; ONNX Runtime with integer (QDQ) kernels", aliases=("x86", "amd64")),
        Target("aarch64", "aarch64", ("onnxruntime",), ("fp32", "int8", "lowbit"),
               "64-bit ARM CPU (Raspberry Pi 4/5 class); ONNX Runtime", aliases=("arm64",)),
    )
}


def get_target(name: str) -> Target:
    for t in TARGETS.values():
        if name == t.name or name in t.aliases:
            return t
    raise ConfigError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
