"""Lower a canonical model to a TVM artifact: a native library (model.so) built by relax.

canonical GraphModule -> (fake-quant rewritten to plain arithmetic, lower.py)
-> torch.export with a dynamic batch -> relax (TVM's torch frontend) -> NHWC
convolutions -> legalized, fused and scheduled loop nests (schedule.py) -> a
shared library for the target's triple and CPU. Float weights are compiled into
the library as constants; int8 weights are kept as runtime arguments stored in
params.bin, so the library dequantizes them on every call instead of relax folding
them back into float32 constants.

Runtime ISA dispatch: for a target with ``dispatch`` variants (the generic x86_64),
the same relax module is also built for each variant (AVX-512, AVX2) into
model-<isa>.so beside the portable model.so; the manifest's ``libraries`` lists them
best first with the CPU flags each needs, and the runtime loads the best one this CPU
runs (runtime.py). params.bin is shared: every build takes the same arguments.
``x86_64-baseline`` builds the portable library alone. A tuned build is a single
library for the target as named: MetaSchedule tunes for one instruction set, so name
the variant to tune for (``--target x86_64-avx512``).

Precision fp16 (CUDA targets): the imported float module is converted to fp16 compute
before the build (fp16.py); inputs and outputs stay float32.
"""

from __future__ import annotations

import platform
import shutil
from typing import Any

import torch
import torch.fx as fx
import tvm
from torch.export.graph_signature import InputKind
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from edgeopt.compile.artifact import ArtifactWriter
from edgeopt.compile.backends.tvm.fp16 import to_fp16
from edgeopt.compile.backends.tvm.intrinsics import import_cuda_intrinsics, wants_tensor_intrinsics
from edgeopt.compile.backends.tvm.lower import lower_fake_quant
from edgeopt.compile.backends.tvm.metaschedule import tuning_pass
from edgeopt.compile.backends.tvm.schedule import default_schedule
from edgeopt.compile.backends.tvm.tune import (
    TuneConfig,
    TuneReport,
    add_batch1_path,
    check_tunable,
)
from edgeopt.compile.targets import Target, get_target
from edgeopt.core.errors import ExportError
from edgeopt.core.graph import export_program, layer_name

MODEL_FILE = "model.so"
PARAMS_FILE = "params.bin"
ENTRY = "main"


def _op_name(node: fx.Node) -> str:
    name = node.target.__name__
    return name[: -len(".default")] if name.endswith(".default") else name


def _source_layer(node: fx.Node, gm: fx.GraphModule) -> str:
    """The canonical layer a decomposed node came from (its module path, else the
    canonical node it was traced from)."""
    name = layer_name(node)
    if name != node.name:
        return name
    by_name = {n.name: n for n in gm.graph.nodes}
    source = node.meta.get("from_node")
    while source:
        if source[0].name in by_name:
            return layer_name(by_name[source[0].name])
        source = source[0].from_node
    return name


def _check_ops(ep: torch.export.ExportedProgram, gm: fx.GraphModule) -> None:
    supported = ExportedProgramImporter().create_convert_map()
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target.__name__ not in supported:
            raise ExportError(
                f"cannot lower operator {_op_name(node)} at layer "
                f"'{_source_layer(node, gm)}' with TVM (no relax conversion)"
            )


def _import(gm: fx.GraphModule, input_shape: list[int]) -> tuple[tvm.IRModule, list]:
    """The relax module and its runtime parameters [(name, torch tensor)], in call order."""
    try:
        lowered, _ = lower_fake_quant(gm)
    except NotImplementedError as exc:
        raise ExportError(f"cannot lower to TVM: {exc}") from None
    ep = export_program(lowered, torch.zeros(2, *input_shape))
    # The frontend would decompose to core aten itself; doing it here lets the
    # unsupported-operator check see exactly the ops the frontend will.
    ep = ep.run_decompositions()
    _check_ops(ep, gm)
    binding, runtime_params = {}, []
    for spec in ep.graph_signature.input_specs:
        if spec.kind is InputKind.PARAMETER:
            tensor = ep.state_dict[spec.target].detach()
            if tensor.is_floating_point():
                binding[spec.arg.name] = tvm.runtime.tensor(tensor.contiguous().numpy())
            else:
                runtime_params.append((spec.arg.name, tensor))
    try:
        mod = from_exported_program(ep, keep_params_as_input=True, run_ep_decomposition=False)
    except Exception as exc:  # the frontend raises assorted types; the first line is what matters
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"TVM's torch frontend cannot import the model: {first}") from exc
    main = mod["main"].without_attr("params")
    mod["main"] = main
    # Float parameters become constants (folded into the NHWC layout at build time).
    mod = relax.transform.BindParams("main", binding)(mod)
    return mod, runtime_params


def relax_module(gm: fx.GraphModule, input_shape: list[int],
                 precision: str = "fp32") -> tuple[tvm.IRModule, list]:
    """The module to build and its runtime parameters; for ``fp16``, converted to
    half-precision compute (fp16.py)."""
    mod, params = _import(gm, input_shape)
    if precision == "fp16":
        if params:  # stored-integer weights: converting them to fp16 would undo the int8
            raise ExportError("fp16 converts a float model; this one has quantized weights")
        mod = to_fp16(mod)
    return mod, params


def _cpu_pipeline(target: Target, tuning: list[tvm.transform.Pass]) -> tvm.transform.Pass:
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    tvm_target = tvm.target.Target(target.tvm)
    lanes = max(target.vector_bits // 32, 4)
    return tvm.transform.Sequential([
        # NHWC activations and HWIO weights make the output channel the innermost,
        # contiguous axis of every convolution: the axis schedule.py vectorizes.
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
        relax.transform.Normalize(),
        *cpu.library_dispatch_passes(tvm_target),
        *cpu.legalize_passes(tvm_target),
        # Tuned schedules first: default_schedule skips what they scheduled.
        *tuning,
        default_schedule(lanes),
        *cpu.dataflow_lower_passes(tvm_target),
        *cpu.finalize_passes(tvm_target),
    ])


@tvm.transform.module_pass(opt_level=0, name="NoTensorCores")
def _no_tensor_cores(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Keep DLight off tensor cores. In TVM 0.27 its WMMA rule, tried on fp16
    matmuls and convolutions wider than 64 for sm_70 and later, crashes the process
    (a segfault in Tensorize: a 64->128 linear for sm_87 is enough) or fails the
    build; the SIMT schedules it falls back to build. fp32 kernels never take it."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            mod[gv] = func.with_attr("dlight.do_not_tensorize", True)
    return mod


def _cuda_pipeline(tvm_target: tvm.target.Target) -> tvm.transform.Pass:
    """Relax's default CUDA pipeline (DLight's GPU rules schedule every kernel), with
    the fused kernels marked for DLight just before it schedules them."""
    from tvm.relax.backend.cuda import pipeline as cuda

    *legalize, schedule = cuda.legalize_passes(tvm_target)
    if schedule.info.name != "ApplyDefaultSchedule":  # a TVM whose pipeline changed
        raise ExportError(f"unexpected last CUDA legalize pass {schedule.info.name}")
    return tvm.transform.Sequential([
        *cuda.library_dispatch_passes(tvm_target),
        *legalize,
        _no_tensor_cores,
        schedule,
        *cuda.dataflow_lower_passes(tvm_target),
        *cuda.finalize_passes(tvm_target),
    ])


def build(mod: tvm.IRModule, target: Target, tune: TuneConfig | None = None,
          report: TuneReport | None = None) -> relax.VMExecutable:
    tvm_target = tvm.target.Target(target.tvm)
    if target.device == "cuda":
        if wants_tensor_intrinsics(tvm_target):
            import_cuda_intrinsics()  # before DLight does, slowly (intrinsics.py)
        with tvm_target:
            mod = _cuda_pipeline(tvm_target)(mod)
        return relax.build(mod, tvm_target, relax_pipeline=None)
    tuning = []
    if tune is not None:
        mod = add_batch1_path(mod)
        tuning = [tuning_pass(target, tune, report)]
    with tvm_target:
        mod = _cpu_pipeline(target, tuning)(mod)
    return relax.build(mod, tvm_target, relax_pipeline=None)


def _compiler(target: Target) -> str | None:
    """The C compiler that links the library: None for the host's, else a cross gcc."""
    if target.arch == platform.machine():
        return None
    cc = target.cross_compiler
    if cc is None or shutil.which(cc) is None:
        package = f" (Debian package {target.cross_package})" if target.cross_package else ""
        raise ExportError(
            f"building a TVM library for {target.name} ({target.arch}) needs the cross "
            f"compiler {cc or target.arch + '-linux-gnu-gcc'}{package}, not found on PATH"
        )
    return cc


def library_file(target: Target, built_for: Target) -> str:
    """model.so for the target's own build, model-<isa>.so for a dispatch variant."""
    return MODEL_FILE if built_for is target else f"model-{built_for.isa}.so"


def _build_library(mod: tvm.IRModule, target: Target, built_for: Target, writer: ArtifactWriter,
                   cc: str | None, tune: TuneConfig | None, report: TuneReport | None) -> dict:
    try:
        executable = build(mod, built_for, tune, report)
    except Exception as exc:  # TVM raises its own error types; the first line is what matters
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"TVM cannot build the model for {built_for.name}: {first}") from exc
    name = library_file(target, built_for)
    if cc is None:
        executable.export_library(str(writer.path(name)))
    else:
        executable.export_library(str(writer.path(name)), cc=cc)
    return {"file": name, "isa": built_for.isa, "target": built_for.name,
            "tvm_target": built_for.tvm_string(), "requires": list(built_for.cpu_flags)}


def export(gm: fx.GraphModule, writer: ArtifactWriter, *, input_shape: list[int],
           target: Target, precision: str | None = None,
           tune: TuneConfig | None = None) -> dict[str, Any]:
    """Write model.so (+ its ISA variants, + params.bin) into the staged artifact;
    returns its manifest fields. The library is machine code for ``target`` alone.
    ``precision="fp16"``: fp16 compute (the caller checks that the target lists it);
    None builds the model at its own precision."""
    if not target.tvm:
        raise ExportError(f"target {target.name} has no TVM target")
    if tune is not None:
        check_tunable(target)
    cc = _compiler(target)
    mod, params = relax_module(gm, input_shape, precision or "fp32")
    report = TuneReport(str(tune.log_dir), tune.seconds) if tune is not None else None
    variants = [get_target(name) for name in target.dispatch] if tune is None else []
    libraries = [_build_library(mod, target, t, writer, cc, tune, report)
                 for t in (*variants, target)]
    fields: dict[str, Any] = {}
    if target.device == "cpu":
        fields["libraries"] = libraries
    if params:
        blob = tvm.runtime.save_param_dict(
            {name: tvm.runtime.tensor(t.contiguous().numpy()) for name, t in params})
        writer.write_bytes(PARAMS_FILE, bytes(blob))
        fields |= {"params_file": PARAMS_FILE, "param_order": [name for name, _ in params]}
    if report is not None:
        fields["tuning"] = report.to_dict()
    with torch.no_grad():
        sample = gm(torch.zeros(2, *input_shape))
    return {
        "backend": "tvm",
        "model_file": MODEL_FILE,  # the portable build: what a runtime without dispatch loads
        **fields,
        "entry": ENTRY,
        "tvm_target": target.tvm_string(),
        "tvm_target_json": target.tvm,
        "device": target.device,
        "arch": target.arch,
        "tvm_version": tvm.__version__,
        "inputs": [{"name": "input", "shape": ["N", *input_shape], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": ["N", *sample.shape[1:]], "dtype": "float32"}],
    }
