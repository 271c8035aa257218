"""core.interrupts: SIGINT/SIGTERM as Interrupted, held through deferred sections."""

import os
import signal
import time

import pytest

from edgeopt.core.interrupts import Interrupted, deferred, handle_signals, interruption


def _signal_self(signum: int) -> None:
    """Send ``signum`` to this process and give Python the moment to run its handler (the
    kernel may deliver it to another thread; the handler always runs in the main one)."""
    os.kill(os.getpid(), signum)
    for _ in range(100):
        time.sleep(0.002)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_with_the_shell_exit_code(signum, code):
    with pytest.raises(Interrupted) as info, handle_signals():
        _signal_self(signum)
        pytest.fail("the signal did not interrupt")
    assert (info.value.exit_code, info.value.signame) == (code, signal.Signals(signum).name)
    assert isinstance(info.value, KeyboardInterrupt)  # no `except Exception` swallows it


def test_a_deferred_section_runs_to_its_end_then_raises():
    done = []
    with pytest.raises(Interrupted) as info, handle_signals():
        with deferred():
            with deferred():  # nested: held until the outermost section ends
                _signal_self(signal.SIGTERM)
                done.append("inner")
            done.append("outer")
        done.append("after")
    assert done == ["inner", "outer"] and info.value.exit_code == 143


def test_handlers_come_back_after_the_block():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with handle_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_section_without_a_signal_raises_nothing():
    with handle_signals(), deferred():
        value = 1
    assert value == 1


def test_then_ignore_leaves_both_signals_ignored():
    """For a process that only exits after the command: SIGTERM's default would kill it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with handle_signals(then_ignore=True):
            pass
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in before)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_an_interruption_that_c_code_turned_into_its_own_error_is_found():
    """pybind11 raises ``ImportError: initialization failed`` from the exception a signal
    raised inside a module's init (onnxruntime's import under SIGTERM)."""
    with pytest.raises(ImportError) as info, handle_signals():
        try:
            _signal_self(signal.SIGTERM)
        except Interrupted as exc:
            raise ImportError("initialization failed") from exc
    stop = interruption(info.value)
    assert stop is not None and stop.exit_code == 143
    # An error that swallowed the chain: the signal raised in the block still names it.
    assert interruption(ValueError("no chain")).signame == "SIGTERM"
    with handle_signals():  # a new block starts with none raised
        assert interruption(ValueError("a bug")) is None


def test_the_command_line_says_an_interruption_behind_another_error_in_one_line(
        monkeypatch, capsys):
    import edgeopt.cli as cli

    def command(args):
        try:
            _signal_self(signal.SIGINT)
        except Interrupted as exc:
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(cli, "_commands", lambda: dict.fromkeys(
        ["optimize", "compress", "compile", "evaluate", "bench", "inspect", "recipes",
         "targets", "package"], command))
    assert cli.main(["recipes"]) == 130
    assert capsys.readouterr().err.strip() == "edgeopt recipes: interrupted by SIGINT"
