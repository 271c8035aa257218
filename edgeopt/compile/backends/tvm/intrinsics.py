"""TVM's CUDA tensor intrinsics, imported in seconds rather than minutes.

DLight's tensor-core rules import ``tvm.s_tir.tensor_intrin`` (~500 TVMScript
functions) the first time they meet a wide fp16 or int8 matmul for sm_70 or later,
even in kernels marked not to be tensorized (export._no_tensor_cores). Each
``T.prim_func`` calls ``inspect.stack()``, which looks up the source of every frame on
the stack; for a frame with no file (the import machinery's ``<frozen ...>``),
``inspect.getmodule`` scans all of ``sys.modules``. With torch loaded and a deep caller
(a test runner) that import took ~4 minutes of one sm_87 build.

TVMScript reads the source line of the first three frames only (``is_defined_in_class``)
and of the others just their locals (closure variables), so for the length of the import
``inspect.stack`` gives the deeper frames without a source lookup.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys

import tvm

_MODULE = "tvm.s_tir.tensor_intrin.cuda"
_SOURCE_FRAMES = 3  # what tvm.script.parser.core.utils.is_defined_in_class reads


def _light_stack(context: int = 1) -> list[inspect.FrameInfo]:
    frame, out = sys._getframe(1), []
    while frame is not None:
        if len(out) < _SOURCE_FRAMES:
            info = inspect.getframeinfo(frame, context)
            out.append(inspect.FrameInfo(frame, *info, positions=info.positions))
        else:
            code = frame.f_code
            out.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                         None, None, positions=None))
        frame = frame.f_back
    return out


def wants_tensor_intrinsics(tvm_target: tvm.target.Target) -> bool:
    """Whether DLight may import the intrinsics for this target (CUDA sm_70 and later)."""
    arch = re.fullmatch(r"sm_(\d+)a?", str(tvm_target.attrs.get("arch", "")))
    return tvm_target.kind.name == "cuda" and arch is not None and int(arch.group(1)) >= 70


def import_cuda_intrinsics() -> None:
    if _MODULE in sys.modules:
        return
    stack = inspect.stack
    inspect.stack = _light_stack
    try:
        importlib.import_module(_MODULE)
    finally:
        inspect.stack = stack
