"""Output failures (issue 14): one line for a bad, full or busy destination, and no
half-written artifact, staging folder or lock left behind."""

import os
import subprocess
import sys
import textwrap

import pytest

from edgeopt.compile.artifact import ArtifactWriter, check_output_dir
from edgeopt.core.errors import EdgeoptError, OutputError


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
