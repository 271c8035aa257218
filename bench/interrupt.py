"""Kill `edgeopt optimize` at seeded random moments (issue 14, "Interruption").

An uninterrupted run first measures how long a run takes and what third-party caches it
leaves in TMPDIR (torch's, which are not edgeopt's to remove). Then each of N runs gets
SIGINT or SIGTERM (a seeded coin) at a moment drawn uniformly over that duration, and is
checked:

- it exits 130 (SIGINT) or 143 (SIGTERM) with one last line "... interrupted by SIG...",
  and no traceback; or it finished before the signal (exit 0);
- --out is absent, or a complete artifact that ``edgeopt.runtime.verify`` accepts and that
  holds exactly the files its manifest lists (finished, or interrupted after the move);
- nothing else is left beside --out (staging folder, lock, probe) or in TMPDIR.

A signal in the first few hundredths of a second reaches Python before it has run a line
of edgeopt, whose handler is not installed yet: Python dies of it (the shell reports
130/143 all the same). Such a run, which cannot have written anything, is accepted only
when the moment falls within the measured interpreter start.

    python bench/interrupt.py --kills 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # a run this much longer than the reference has hung
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def workload(root: Path, recipe: str = "int8") -> list[str]:
    """`edgeopt optimize` argv (without --out) of a quick run: edgeopt.testing's TinyCNN
    (5 classes, 1x8x8) on a small seeded .npz written into ``root``."""
    rng = np.random.default_rng(0)
    data = root / "data.npz"
    np.savez(data, x_train=rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8),
             y_train=np.arange(64) % 5, x_test=rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8),
             y_test=np.arange(16) % 5)
    return ["optimize", "edgeopt.testing:tiny_cnn", "--data", str(data), "--recipe", recipe,
            "--calib-size", "32", "--eval-limit", "16", "--batch", "2", "--threads", "1",
            "--no-progress"]


@dataclass
class Outcome:
    """One run: what it returned and what it left."""

    signame: str | None  # None: not interrupted
    at_s: float | None
    rc: int | None  # None: it hung
    last_line: str
    seconds: float
    artifact: str  # "absent", "complete" or what is wrong with it
    stray: list[str] = field(default_factory=list)
    clear: bool = False  # ended as a signal should: exit code and one line
    note: str = ""
    stderr: str = ""

    @property
    def half_written(self) -> bool:
        return self.artifact not in ("absent", "complete")

    @property
    def ok(self) -> bool:
        return self.clear and not self.half_written and not self.stray


def cli_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgeopt.cli", *argv]


def environment(tmpdir: Path) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmpdir)}


def artifact_state(out: Path) -> str:
    """"absent", "complete", or why the folder at ``out`` is not a whole artifact."""
    from edgeopt.core.errors import EdgeoptError
    from edgeopt.runtime import MANIFEST, read_manifest, verify

    if not out.exists():
        return "absent"
    try:
        manifest = read_manifest(out)
        verify(out, manifest)
    except EdgeoptError as exc:
        return f"half-written ({exc})"
    extra = {p.name for p in out.iterdir()} - set(manifest["files"]) - {MANIFEST}
    return f"half-written (unlisted {sorted(extra)})" if extra else "complete"


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def run(argv: list[str], work: Path, *, sig: int | None = None, at_s: float = 0.0,
        when: Callable[[], bool] | None = None, caches: set[str] | None = None,
        startup_s: float = 0.0) -> Outcome:
    """Run ``argv`` with --out work/place/art (TMPDIR work/tmp) and signal it at ``at_s``,
    or as soon as ``when()`` is true; TMPDIR is checked when ``caches`` (what an
    uninterrupted run leaves there) is given."""
    place, tmpdir = work / "place", work / "tmp"
    place.mkdir(parents=True)
    tmpdir.mkdir()
    out = place / "art"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cli_command([*argv, "--out", str(out)]), env=environment(tmpdir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rc, err = None, ""
    try:
        if sig is not None:
            _signal_at(proc, sig, at_s, when)
            at_s = time.perf_counter() - t0
        _, err = proc.communicate(timeout=TIMEOUT_S)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    lines = err.strip().splitlines()
    result = Outcome(signame=signal.Signals(sig).name if sig else None,
                     at_s=at_s if sig else None, rc=rc, last_line=lines[-1] if lines else "",
                     seconds=seconds, artifact=artifact_state(out), stderr=err,
                     stray=leftovers(place, {"art"}))
    if caches is not None:
        result.stray += [f"TMPDIR/{name}" for name in leftovers(tmpdir, caches)]
    result.clear, result.note = _judge(result, err, sig, startup_s)
    return result


def _signal_at(proc: subprocess.Popen, sig: int, at_s: float,
               when: Callable[[], bool] | None) -> None:
    if when is None:
        try:
            proc.wait(timeout=at_s)
            return  # finished first
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            return
    deadline = time.perf_counter() + TIMEOUT_S
    while proc.poll() is None and time.perf_counter() < deadline:
        if when():
            proc.send_signal(sig)
            return
        time.sleep(0.005)


def _judge(r: Outcome, err: str, sig: int | None, startup_s: float) -> tuple[bool, str]:
    if r.rc is None:
        return False, f"hung past {TIMEOUT_S} s"
    if "Traceback" in err:
        return False, "traceback"
    if r.rc == 0:
        return r.artifact == "complete", "finished before the signal" if sig else "finished"
    if sig is not None and r.rc == 128 + sig:
        interrupted = r.last_line.endswith(f": interrupted by {signal.Signals(sig).name}")
        lines = [ln for ln in err.splitlines() if "interrupted" in ln]
        return interrupted and len(lines) == 1, (
            "interrupted after the artifact was in place" if r.artifact == "complete"
            else "interrupted")
    if sig is not None and r.rc == -sig and r.at_s is not None and r.at_s <= startup_s:
        return not err.strip(), "killed while Python started, before edgeopt's handler"
    return False, f"exit {r.rc}: {r.last_line}"


def interpreter_start_s() -> float:
    """How long a fresh Python takes to reach edgeopt's handler (the slowest of 3)."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import edgeopt.cli"], check=True,
                           env=environment(Path(tmp)))
            times.append(time.perf_counter() - t0)
    return max(times)


def kill_runs(kills: int, seed: int, root: Path, log=None) -> tuple[Outcome, list[Outcome]]:
    """The reference run, then ``kills`` runs signalled at seeded moments within it."""
    root.mkdir(parents=True, exist_ok=True)
    argv = workload(root)
    reference = run(argv, root / "reference")
    if not reference.ok:
        raise RuntimeError(f"the uninterrupted run failed: {reference.note} {reference.stray}")
    caches = set(leftovers(root / "reference" / "tmp", set()))
    startup = interpreter_start_s()
    rng = random.Random(seed)
    outcomes = []
    for i in range(kills):
        sig, at = rng.choice(SIGNALS), rng.uniform(0, reference.seconds)
        outcomes.append(run(argv, root / f"kill{i}", sig=sig, at_s=at, caches=caches,
                            startup_s=startup))
        if log:
            log(row(i, outcomes[-1]))
    return reference, outcomes


# Distillation long enough to be cut while it trains, then int8: a training recipe.
RESUME_RECIPE = """\
name: resume-check
description: 120 distillation steps (a checkpoint every 10), then int8
steps:
  - distill: {steps: 120, lr: 1.0e-3, batch_size: 16, checkpoint_every: 10}
  - quantize: {bias_correction: true}
"""


@dataclass
class Resume:
    """An uninterrupted training run, one cut by SIGINT while it trains, its --resume."""

    reference: Outcome
    cut: Outcome
    resumed: Outcome
    cut_at_step: int | None  # the step the cut run's checkpoint holds
    resumed_from: int | None  # the step the resumed run's report says it started at
    same_bytes: bool  # model.onnx of the resumed run == the uninterrupted one's (sha256)

    @property
    def ok(self) -> bool:
        return (self.cut.ok and self.cut.artifact == "absent" and self.resumed.ok
                and self.cut_at_step is not None and self.resumed_from == self.cut_at_step
                and self.same_bytes)


def resume_run(root: Path) -> Resume:
    from edgeopt.core.checkpoint import load_checkpoint
    from edgeopt.core.files import sha256_file

    (root / "resume.yaml").write_text(RESUME_RECIPE)
    argv = workload(root, recipe=str(root / "resume.yaml"))
    ck = root / "checkpoints"
    first = ck / "step0-distill.pt"
    reference = run(argv, root / "resume-reference")
    cut = run([*argv, "--checkpoint-dir", str(ck)], root / "resume-cut", sig=signal.SIGINT,
              when=first.exists)
    step = int(load_checkpoint(first)["step"]) if first.exists() else None
    resumed = run([*argv, "--checkpoint-dir", str(ck), "--resume"], root / "resume-end")
    ref_art, end_art = root / "resume-reference/place/art", root / "resume-end/place/art"
    same = ((ref_art / "model.onnx").is_file() and (end_art / "model.onnx").is_file()
            and sha256_file(ref_art / "model.onnx") == sha256_file(end_art / "model.onnx"))
    report = end_art / "report.json"
    resumed_from = (json.loads(report.read_text())["meta"]["compression"]["steps"][0]
                    ["resumed_from"] if report.is_file() else None)
    return Resume(reference, cut, resumed, step, resumed_from, same)


def row(i: int, o: Outcome) -> str:
    stray = ", ".join(o.stray) or "-"
    return (f"{i:>3}  {o.signame or '-':7s}  {o.at_s or 0:6.2f}  {o.rc!s:>5}  "
            f"{'yes' if o.clear else 'NO':5s}  {o.artifact[:40]:40s}  {stray[:30]:30s}  {o.note}")


HEADER = (f"{'#':>3}  {'signal':7s}  {'at s':>6s}  {'exit':>5s}  {'clear':5s}  "
          f"{'artifact':40s}  {'stray':30s}  note")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeopt-kills-") as tmp:
        print(HEADER)
        reference, outcomes = kill_runs(args.kills, args.seed, Path(tmp), log=print)
    bad = [o for o in outcomes if not o.ok]
    print(f"reference run {reference.seconds:.1f} s; {len(outcomes)} kills, {len(bad)} not clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
