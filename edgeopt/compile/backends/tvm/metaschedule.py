"""The MetaSchedule search behind ``tune.TuneConfig``: the batch-1 copy's tasks measured
within the time budget, the records kept as JSON lines in the log folder (see tune.py)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from edgeopt.compile.backends.tvm.tune import RECORD_FILE, TuneConfig, TuneReport

# Candidates measured per search round: small rounds let the deadline stop a task soon.
_TRIALS_PER_ROUND = 16


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
