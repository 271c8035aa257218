"""The fp16 module of a float model built for this CPU: how fp16 is measured without a GPU.

The same relax module ``export.relax_module(..., precision="fp16")`` lowers for a CUDA
target is built for the host instead (``_HOST_TARGET``), so weights and every tensor
between kernels are rounded to fp16 exactly as on the GPU (see fp16.py for what still
differs). ``--precision auto`` reports fp16's accuracy from ``host_fp16_runner``;
``fp16_reference_check`` compares it with PyTorch fp32.

Kept apart from fp16.py, the conversion pass: export.py imports that one, and this
module imports export.py (and compile.api's canonical form) to build.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import tvm
from tvm.runtime.vm import VirtualMachine

from edgeopt.compile.api import model_precision, prepare
from edgeopt.compile.backends.tvm.export import build, relax_module
from edgeopt.compile.targets import get_target
from edgeopt.core.errors import ConfigError

# The CPU build that stands in for the GPU.
_HOST_TARGET = {"x86_64": "x86_64-baseline", "aarch64": "aarch64"}


def host_fp16_runner(gm: torch.fx.GraphModule,
                     input_shape: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """The fp16-converted module of a canonical float model, built for this CPU:
    preprocessed float32 batch -> float32 logits."""
    if platform.machine() not in _HOST_TARGET:
        raise ConfigError(f"no CPU target to run fp16 TVM builds on {platform.machine()}")
    mod, _ = relax_module(gm, input_shape, precision="fp16")
    vm = VirtualMachine(build(mod, get_target(_HOST_TARGET[platform.machine()])), tvm.cpu(0))
    main = vm["main"]

    def run(x: np.ndarray) -> np.ndarray:
        out = main(tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32)))
        return (out if hasattr(out, "numpy") else out[0]).numpy()

    return run


@dataclass(frozen=True)
class Fp16Check:
    """The fp16 module (on this CPU) against PyTorch fp32, on the same inputs."""

    n: int
    max_abs_diff: float  # largest |fp16 logit - fp32 logit|
    max_abs_logit: float  # the fp32 logits' scale, to read the difference against
    agreement: float  # fraction of inputs whose top-1 class is the same


def fp16_reference_check(model, input_shape: list[int] | None, x) -> Fp16Check:
    """Build ``model``'s fp16 conversion for this CPU, run it on ``x`` (a preprocessed
    N,C,H,W batch) and compare with the float model in PyTorch."""
    gm, shape = prepare(model, input_shape)
    actual, _ = model_precision(gm)
    if actual != "fp32":
        raise ConfigError(f"fp16 converts a float model; this model is {actual}")
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        ref = gm(x).numpy()
    got = host_fp16_runner(gm, shape)(x.numpy())
    return Fp16Check(n=len(ref), max_abs_diff=float(np.abs(got - ref).max()),
                     max_abs_logit=float(np.abs(ref).max()),
                     agreement=float((got.argmax(1) == ref.argmax(1)).mean()))
