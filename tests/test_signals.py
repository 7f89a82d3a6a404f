"""SIGTERM and SIGHUP become a KeyboardInterrupt; signals wait while results are written."""

from __future__ import annotations

import signal

import pytest

from agent.signals import (
    Terminated,
    deferred_signals,
    exit_code,
    signal_name,
    terminate_as_interrupt,
)


def test_sigterm_raises_terminated_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as stopped, terminate_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert isinstance(stopped.value, Terminated)
    assert (exit_code(stopped.value), signal_name(stopped.value)) == (143, "SIGTERM")
    assert (exit_code(KeyboardInterrupt()), signal_name(KeyboardInterrupt())) == (130, "SIGINT")
    assert signal.getsignal(signal.SIGTERM) == before


def test_signals_wait_until_the_results_are_written() -> None:
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, default_int_handler in a terminal
    written = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        signal.raise_signal(signal.SIGINT)
        written.append("summary.json")  # not cut off by the Ctrl-C above
    assert written == ["summary.json"]
    assert signal.getsignal(signal.SIGINT) == before
