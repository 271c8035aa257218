"""fp16 builds: TVM converts a float32 model to half-precision compute (CUDA targets).

``to_fp16`` runs relax's ToMixedPrecision on the imported module: convolutions and
matmuls take fp16 operands (weights become fp16 constants: half the bytes) and
accumulate in fp32; bias adds, activations, pooling and reshapes run in fp16. The
function keeps its float32 signature (one cast in, one cast out), so the runtime and
the manifest's input/output dtypes are those of an fp32 artifact.

No GPU is needed to see what the conversion does to the numbers:
``fp16_host.fp16_reference_check`` builds the very same converted relax module
for this machine's CPU and compares its logits with PyTorch fp32. Weights and every tensor
between kernels are rounded to fp16 exactly as on the GPU; what differs is the
summation order of the fp32 accumulators (and, inside a fused kernel, LLVM may keep
an intermediate in float where the GPU rounds it to fp16).

What a CUDA build holds: TVM 0.27 keeps the generated CUDA C source in the library
and compiles it on the device when the library is loaded (NVRTC, or nvcc with
TVM_CUDA_COMPILE_MODE=nvcc). ``cuda_source`` and ``nvcc_ptx`` let a machine without
a GPU inspect that source and compile it with nvcc ahead of time.
"""

from __future__ import annotations

import shutil

import tvm
from tvm import relax

from edgeopt.core.errors import ExportError

# The accumulator of fp16 convolutions and matmuls. float32, as cuDNN, TensorRT and
# PyTorch autocast do by default: an fp16 sum keeps 11 significant bits, so a dot
# product over C*kh*kw (hundreds of) terms loses the small ones and can overflow at
# 65504. The cost is small: the operands (and the memory traffic, what bounds an edge
# GPU such as Orin's) are still fp16; only the multiply-add runs in fp32.
ACCUMULATE = "float32"


def _clip_as_min_max(mod: tvm.IRModule) -> tvm.IRModule:
    """R.clip(x, lo, hi) -> minimum(maximum(x, lo), hi) with tensor bounds.

    ToMixedPrecision expects every argument to be a tensor and stops with an internal
    error on clip's scalar bounds, which is how ReLU6 (MobileNetV2) and hardtanh import."""
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, lo, hi = wildcard(), wildcard(), wildcard()
    pattern = is_op("relax.clip")(x, lo, hi)

    def rewrite(_call: relax.Expr, matches) -> relax.Expr:
        data, dtype = matches[x], matches[x].ty.dtype
        low = relax.op.maximum(data, relax.const(float(matches[lo].value), dtype))
        return relax.op.minimum(low, relax.const(float(matches[hi].value), dtype))

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = rewrite_call(pattern, rewrite, func)
    return mod


def to_fp16(mod: tvm.IRModule) -> tvm.IRModule:
    """fp16 compute with fp32 accumulation, float32 in and out, weights stored as fp16."""
    try:
        mod = relax.transform.ToMixedPrecision(out_dtype=ACCUMULATE)(_clip_as_min_max(mod))
    except Exception as exc:  # TVM's internal check failures; their last line says what
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ExportError(f"TVM cannot convert the model to fp16: {last}") from exc
    # ToMixedPrecision casts each fp32 weight constant to fp16 inside the graph; folding
    # the casts stores the fp16 values themselves instead of converting on every call.
    return relax.transform.FoldConstant()(mod)


def constant_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constants (the bound weights) in the module's relax functions."""
    seen: dict[int, int] = {}  # by node: a constant visited twice is stored once

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, tvm.ir.GenericConst):
            seen[hash(expr)] = expr.value.numpy().nbytes

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(seen.values())


def cuda_source(executable: relax.VMExecutable) -> str:
    """The CUDA C source of a CUDA build's kernels (what the device compiles at load)."""
    pending = list(executable.mod.imports)
    while pending:
        module = pending.pop()
        if module.kind == "cuda":
            return module.inspect_source("")
        pending += list(module.imports)
    raise ExportError("the TVM build holds no CUDA module")


def nvcc_ptx(source: str, arch: str) -> str:
    """Compile CUDA source with nvcc for ``arch`` (e.g. sm_87), as TVM's runtime would
    with TVM_CUDA_COMPILE_MODE=nvcc; returns the PTX."""
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:
        raise ExportError("nvcc (the CUDA toolkit's compiler) is not on PATH")
    # compile_cuda reads the compute version from the current target.
    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        try:
            ptx = nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc")
        except RuntimeError as exc:  # the message is the whole source, then nvcc's output
            tail = str(exc).split("Compilation error:")[-1].strip().splitlines()
            raise ExportError(f"nvcc cannot compile the kernels for {arch}: "
                              f"{(tail or ['no output'])[0]}") from None
    return bytes(ptx).decode()

