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
rest imports TVM inside the functions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ConfigError

RECORD_FILE = "tuning_records.jsonl"
TUNED_BATCH = 1
# Candidates measured per search round: small rounds let the deadline stop a task soon.
_TRIALS_PER_ROUND = 16


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


def _key(mod) -> str:
    # The printed TIR is deterministic across processes, unlike object identities.
    return hashlib.sha256(mod.script().encode()).hexdigest()[:24]


def _database(log_dir: Path):
    """A MetaSchedule database kept as JSON lines in ``log_dir``.

    Not ms.database.JSONDatabase: it stores each workload as a serialized IRModule,
    and TVM 0.27's IR serialization (ToJSONGraph) segfaults on this build. Records are
    keyed by a hash of the workload's TVMScript and rebuilt, with MetaSchedule's own
    TuningRecord.from_json, when that workload is next asked for. Appending one line
    per measured candidate keeps an interrupted run's records.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / RECORD_FILE
    stored: dict[str, list] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                stored.setdefault(entry["workload"], []).append(entry["record"])

    @derived_object
    class _LogDatabase(ms.database.PyDatabase):
        def __init__(self):
            super().__init__()
            self.workloads: dict[str, Any] = {}
            self.records: dict[str, list] = {}

        def has_workload(self, mod) -> bool:
            return _key(mod) in self.workloads or _key(mod) in stored

        def commit_workload(self, mod):
            key = _key(mod)
            if key not in self.workloads:
                workload = ms.database.Workload(mod)
                self.workloads[key] = workload
                self.records[key] = [ms.database.TuningRecord.from_json(r, workload)
                                     for r in stored.get(key, [])]
            return self.workloads[key]

        def commit_tuning_record(self, record) -> None:
            key = _key(record.workload.mod)
            self.commit_workload(record.workload.mod)
            self.records[key].append(record)
            stored.setdefault(key, []).append(None)  # counted by __len__
            with path.open("a") as f:
                f.write(json.dumps({"workload": key, "record": record.as_json()}) + "\n")

        def get_top_k(self, workload, top_k: int) -> list:
            valid = [r for r in self.records.get(_key(workload.mod), [])
                     if r.run_secs and all(float(t) < 1e9 for t in r.run_secs)]
            valid.sort(key=lambda r: sum(float(t) for t in r.run_secs) / len(r.run_secs))
            return valid[:top_k]

        def get_all_tuning_records(self) -> list:
            return [r for records in self.records.values() for r in records]

        def __len__(self) -> int:
            return sum(len(v) for v in stored.values())

    return _LogDatabase()


def _static(task) -> bool:
    """Whether every parameter of the task is a buffer of constant shape. MetaSchedule
    cannot measure symbolic shapes (and TVM 0.27 crashes writing them to the log)."""
    from tvm import tirx

    params = task.dispatched[0]["main"].params
    # TVM 0.27 PrimFunc parameters are buffer-typed vars carrying their shape.
    shapes = [getattr(p, "shape", None) for p in params]
    return all(shape is not None and all(isinstance(d, tirx.IntImm) for d in shape)
               for shape in shapes)


def _records(database, task) -> int:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 20))


def _builder():
    """Builds candidates in this process.

    MetaSchedule's LocalBuilder pickles each candidate IRModule to worker processes,
    which goes through the same crashing IR serialization; building here costs the
    parallel compilation only (2 cores here anyway). Measurement still runs in
    LocalRunner's worker processes, which receive just the built library's path.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import local_builder

    @derived_object
    class _InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    lib = local_builder.default_build(item.mod, item.target, None)
                    results.append(ms.builder.BuilderResult(
                        local_builder.default_export(lib), None))
                except Exception as exc:  # noqa: BLE001 - a failed candidate is a result
                    results.append(ms.builder.BuilderResult(None, f"build failed: {exc}"))
            return results

    return _InProcessBuilder()


def _deadline_callback(deadline: float):
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class _StopAtDeadline(ms.measure_callback.PyMeasureCallback):
        """MetaSchedule has trial limits only; this ends the task when time is up."""

        def apply(self, task_scheduler, task_id, *_results) -> None:
            if time.monotonic() >= deadline:
                task_scheduler.terminate_task(task_id)

    return _StopAtDeadline()


def _tune(tasks, database, cfg: TuneConfig, report: TuneReport, log_dir: Path) -> None:
    """Measure what the log lacks, task by task, each within its share of the time left."""
    from tvm.s_tir import meta_schedule as ms

    start = time.monotonic()
    todo = [(t, cfg.trials_per_task - _records(database, t)) for t in tasks]
    todo = [(t, n) for t, n in todo if n > 0]
    for i, (task, missing) in enumerate(todo):
        left = cfg.seconds - (time.monotonic() - start)
        if left <= 1:
            break
        deadline = time.monotonic() + left / (len(todo) - i)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=str(log_dir), seed=0)
        if not contexts:  # already scheduled
            continue
        before = _records(database, task)
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(log_dir),
            max_trials_global=missing, max_trials_per_task=missing,
            num_trials_per_iter=min(missing, _TRIALS_PER_ROUND), database=database,
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                               _deadline_callback(deadline)],
            # The default scheduler picks tasks by gradient; with one task, round robin
            # skips its bookkeeping.
            task_scheduler="round-robin",
            builder=_builder(),
            # xgboost is not a dependency: candidates are drawn by the evolutionary
            # search's mutations with a random ranking.
            cost_model="random",
        )
        report.new_trials += _records(database, task) - before
    report.elapsed_s = time.monotonic() - start


def tuning_pass(target, cfg: TuneConfig, report: TuneReport):
    """A module pass, after legalization and fusion: tune, then apply the database."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    # MetaSchedule sizes parallel loops by the target's core count, which edgeopt's
    # targets leave open: it is this machine's, the one that measures.
    cores = ms.utils.cpu_count(logical=False)
    tvm_target = tvm.target.Target({**target.tvm, "num-cores": cores})

    @tvm.transform.module_pass(opt_level=0, name="EdgeoptMetaScheduleTune")
    def _pass(mod, _ctx):
        database = _database(cfg.log_dir)
        # Only the batch-1 copy's functions have static shapes.
        tasks = [t for t in ms.relax_integration.extract_tasks(mod, tvm_target) if _static(t)]
        report.tasks = len(tasks)
        if cfg.seconds > 0 and tasks:
            _tune(tasks, database, cfg, report, cfg.log_dir)
        digest = hashlib.sha256()
        for task in tasks:
            record = database.query_tuning_record(task.dispatched[0], tvm_target, "main")
            if record is not None:
                report.tasks_applied += 1
                digest.update(str(record.trace).encode())
        report.digest = digest.hexdigest()[:16] if report.tasks_applied else ""
        report.records_total = len(database)
        with tvm_target, database:
            # Marks what it schedules tirx.is_scheduled, which default_schedule skips.
            return relax.transform.MetaScheduleApplyDatabase()(mod)

    return _pass
