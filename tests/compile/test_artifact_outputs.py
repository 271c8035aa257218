"""Output failures (issue 14): one line for a bad, full or busy destination, and no
half-written artifact, staging folder or lock left behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgeopt.compile import artifact, lock
from edgeopt.compile.artifact import ArtifactWriter, check_output_dir
from edgeopt.core.errors import EdgeoptError, OutputError
from edgeopt.core.interrupts import Interrupted, handle_signals


def test_invalid_destination_is_one_line():
    with pytest.raises(OutputError) as info:
        ArtifactWriter("/proc/x")
    assert "\n" not in str(info.value) and "/proc/x" in str(info.value)


def test_a_bad_destination_is_refused_before_any_work(tmp_path):
    """optimize and compile call check_output_dir first: a destination that cannot be
    written fails there, not after compression has run; a good one is left untouched."""
    for bad in ("/proc/x/art", tmp_path / "file" / "art"):
        (tmp_path / "file").write_text("not a folder")
        with pytest.raises(OutputError, match="cannot write to"):
            check_output_dir(bad, force=False)
    assert check_output_dir(tmp_path / "new" / "art", force=False) == tmp_path / "new" / "art"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe, no folder


def test_unwritable_destination_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(OutputError):
        ArtifactWriter(ro / "art")


def test_failed_run_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ArtifactWriter(tmp_path / "art") as w:
        w.write_bytes("model.onnx", b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no artifact, no staging folder, no lock


def test_second_writer_on_same_out_refuses_first_wins(tmp_path):
    out = tmp_path / "art"
    with ArtifactWriter(out) as first:
        with pytest.raises(OutputError, match="another edgeopt run"):
            ArtifactWriter(out)
        first.write_manifest({"k": 1})
        first.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert (out / "manifest.json").is_file()


def test_stale_lock_of_dead_run_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / ".art.lock").write_text(dead)
    with ArtifactWriter(tmp_path / "art") as w:
        w.write_manifest({})
        w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past 64 KiB fail with EFBIG."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        from edgeopt.compile.artifact import ArtifactWriter, check_output_dir
        from edgeopt.core.errors import EdgeoptError
        try:
            with ArtifactWriter({str(tmp_path / "art")!r}) as w:
                w.write_bytes("model.onnx", b"x" * 200_000)
                w.commit()
        except EdgeoptError as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("OutputError") and len(proc.stdout.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_output_error_is_an_edgeopt_error():
    assert issubclass(OutputError, EdgeoptError)


def test_the_cli_ignores_sigxfsz_so_a_file_size_limit_is_one_line():
    """Without this a size-limited run dies of the signal, with no line at all."""
    code = ("import signal, sys; from edgeopt.cli import main; main(['recipes']); "
            "sys.stderr.write(str(signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip().endswith("True"), proc.stderr


# ------------------------------------------------------------- interrupted (SIGINT, SIGTERM)


def _signal_self(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)
    for _ in range(100):  # the handler runs in the main thread at its next check
        time.sleep(0.002)


def test_a_signal_while_the_lock_is_made_leaves_no_lock(tmp_path, monkeypatch):
    """Between creating the lock and writing its pid: without the deferred section the
    lock stayed, empty, and every later run refused (an unreadable lock is not stolen)."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        _signal_self()
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(lock.os, "fdopen", fdopen)
    with pytest.raises(Interrupted), handle_signals():
        ArtifactWriter(tmp_path / "art")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    with ArtifactWriter(tmp_path / "art") as w:  # and the next run is not refused
        w.write_manifest({})
        w.commit()


def test_a_signal_during_the_move_ends_in_the_whole_artifact(tmp_path, monkeypatch):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real = artifact.replace_dir

    def replace_dir(src, dst):
        real_replace = os.replace
        calls = []

        def replace(a, b):  # the signal lands between setting the old one aside and the move
            calls.append(a)
            if len(calls) == 2:
                _signal_self()
            return real_replace(a, b)

        monkeypatch.setattr(artifact.os, "replace", replace)
        return real(src, dst)

    monkeypatch.setattr(artifact, "replace_dir", replace_dir)
    with pytest.raises(Interrupted), handle_signals(), ArtifactWriter(out, force=True) as w:
        w.write_bytes("model.onnx", b"new")
        w.write_manifest({})
        w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no .art.old, no lock
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]


def test_a_failed_move_puts_the_old_artifact_back(tmp_path, monkeypatch):
    src, out = tmp_path / "new", tmp_path / "art"
    src.mkdir()
    out.mkdir()
    (out / "old.txt").write_text("old")
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(artifact.os, "replace", replace)
    with pytest.raises(OSError):
        artifact.replace_dir(src, out)
    assert (out / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "new"]


def test_a_writer_never_entered_is_removed_at_exit(tmp_path):
    """A signal between ArtifactWriter() and its __enter__ skips __exit__: the atexit
    clean-up removes the staging folder, the lock and the folders it made."""
    code = (f"from edgeopt.compile.artifact import ArtifactWriter; "
            f"w = ArtifactWriter({str(tmp_path / 'a' / 'b' / 'art')!r}); "
            f"import os; print(len(os.listdir({str(tmp_path / 'a' / 'b')!r})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr  # lock + staging
    assert list(tmp_path.iterdir()) == []


def test_a_run_locking_after_another_committed_refuses(tmp_path, monkeypatch):
    """Both passed the early check while --out did not exist; the second takes the lock
    once the first has committed and released it: it must not replace the first's."""
    out = tmp_path / "art"
    real = artifact.take_lock

    def take_lock_after_the_other_committed(path):
        monkeypatch.setattr(artifact, "take_lock", real)  # the first run locks plainly
        with ArtifactWriter(out) as first:
            first.write_manifest({"first": True})
            first.commit()
        return real(path)

    monkeypatch.setattr(artifact, "take_lock", take_lock_after_the_other_committed)
    with pytest.raises(EdgeoptError, match="already exists"):
        ArtifactWriter(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert '"first": true' in (out / "manifest.json").read_text()
