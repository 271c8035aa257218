"""Optional MetaSchedule tuning of a TVM build, within a time budget, resumable from its log.

MetaSchedule only tunes loop nests of static shape (its extraction skips the
symbolic batch of edgeopt's artifacts), so tuning targets batch 1, the latency an
edge device cares about: the build gains a copy of the model specialized to batch
1, ``main`` dispatches to it when the batch is 1 and to the dynamic copy (default
schedule) otherwise. Each fused function of the batch-1 copy is a task; measured
candidates go to a JSON database in the log folder as they are measured, so an
interrupted or repeated run keeps them. A task that already holds its
``trials_per_task`` records is skipped; the others get what they lack. The best
record of each task is then applied; tasks without one keep the default schedule.

Candidates are measured on this machine, so only a target this CPU can run is
tuned: a cross target (aarch64) or an ISA this CPU lacks is refused. Tuning the
host's version of the same ops would pick schedules for the wrong micro-architecture.

TuneConfig imports without TVM (the CLI and the onnxruntime refusal need it); the
rest imports TVM inside the functions. The search itself is ``metaschedule.py``.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ConfigError

RECORD_FILE = "tuning_records.jsonl"
TUNED_BATCH = 1


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """``seconds`` of measurement at most (0 applies the log without tuning)."""

    seconds: float
    log_dir: str | Path
    trials_per_task: int = 64

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ConfigError(f"tuning seconds must be >= 0, got {self.seconds}")
        if self.trials_per_task < 1:
            raise ConfigError(f"trials per task must be >= 1, got {self.trials_per_task}")
        object.__setattr__(self, "log_dir", Path(self.log_dir))


def check_tunable(target) -> None:
    """ConfigError unless this machine can measure code built for ``target``."""
    host = platform.machine()
    if target.device != "cpu" or target.arch != host:
        where = f"{target.device} on {target.arch}" if target.device != "cpu" else target.arch
        raise ConfigError(
            f"cannot tune for {target.name} ({where}): MetaSchedule measures candidates on "
            f"this machine ({host} CPU); build without --tune-seconds"
        )
    if target.vector_bits > 256 and not _host_has("avx512f"):
        raise ConfigError(f"cannot tune for {target.name}: this CPU has no AVX-512")
    if not _ir_serialization_works():
        import tvm
        import tvm_ffi

        raise ConfigError(
            f"MetaSchedule cannot run with this TVM (apache-tvm {tvm.__version__}, "
            f"apache-tvm-ffi {tvm_ffi.__version__}): its IR serialization crashes; "
            f"build without --tune-seconds"
        )


@functools.cache
def _ir_serialization_works() -> bool:
    """Whether TVM can serialize IR, tried in a child process because it segfaults.

    apache-tvm 0.27.0.post1 with apache-tvm-ffi 0.1.15.post2 crashes in ToJSONGraph
    on any typed IR node (a PrimType), and MetaSchedule serializes IR as it sets up
    each task: tuning would kill the process instead of failing with a message.
    """
    code = "import tvm; tvm.ir.save_json(tvm.ir.PrimType('int32'))"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _host_has(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def add_batch1_path(mod):
    """``mod`` whose main runs a batch-1 specialized copy when the batch is 1.

    Returns ``mod`` unchanged when the batch is already static."""
    from tvm import ir, relax, tirx

    main = mod["main"]
    batch = main.params[0].ty.shape.values[0]
    if not isinstance(batch, tirx.Var):
        return mod
    dynamic = main.without_attr("global_symbol")
    static = dynamic.bind_symbolic_vars({batch: TUNED_BATCH})
    bb = relax.BlockBuilder(ir.IRModule())
    gv_dynamic = bb.add_func(dynamic, "main_dynamic")
    gv_static = bb.add_func(static, "main_batch1")

    args = [relax.Var(p.name, p.ty) for p in main.params]
    x_static = relax.Var("x_batch1", static.params[0].ty)
    y_static = relax.Var("y_batch1", static.ret_ty)
    y_then = relax.Var("y_then", main.ret_ty)
    then_branch = relax.SeqExpr([relax.BindingBlock([
        relax.MatchCast(x_static, args[0], static.params[0].ty),
        relax.VarBinding(y_static, relax.Call(gv_static, [x_static, *args[1:]])),
        # Back to the symbolic type, so both branches return the same type.
        relax.MatchCast(y_then, y_static, main.ret_ty),
    ])], y_then)
    y_else = relax.Var("y_else", main.ret_ty)
    else_branch = relax.SeqExpr([relax.BindingBlock([
        relax.VarBinding(y_else, relax.Call(gv_dynamic, args)),
    ])], y_else)
    # The new main's batch var comes from its own first parameter.
    own_batch = args[0].ty.shape.values[0]
    with bb.function("main", args, attrs=dict(main.attrs)):
        out = bb.emit(relax.If(own_batch == TUNED_BATCH, then_branch, else_branch))
        bb.emit_func_output(out)
    return bb.finalize()


@dataclass
class TuneReport:
    """What the tuning of one build did (the manifest's ``tuning`` field)."""

    log_dir: str
    seconds: float
    tasks: int = 0
    tasks_applied: int = 0
    new_trials: int = 0
    records_total: int = 0
    elapsed_s: float = 0.0
    digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.tasks_applied > 0,
            "batch": TUNED_BATCH,
            "log_dir": self.log_dir,
            "seconds": self.seconds,
            "tasks": self.tasks,
            "tasks_applied": self.tasks_applied,
            "records_total": self.records_total,
            "new_trials": self.new_trials,
            "elapsed_s": round(self.elapsed_s, 1),
            # Of the applied schedules: equal digests mean the same build.
            "records_digest": self.digest,
        }
