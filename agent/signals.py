"""SIGTERM and SIGHUP handled like Ctrl-C, so that what finished is written whichever way a run is stopped.

A cluster scheduler, `timeout` or a closed terminal stop a process with SIGTERM or SIGHUP, whose default
action kills Python without running any `finally`. `terminate_as_interrupt` turns them into `Terminated`,
a KeyboardInterrupt, so the session's clean-up runs as it does for Ctrl-C. `deferred_signals` holds them
back while results are being written, so a second Ctrl-C cannot cut a summary in half.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal other than SIGINT."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT)


def signal_name(interrupt: KeyboardInterrupt) -> str:
    return signal.Signals(interrupt.signum).name if isinstance(interrupt, Terminated) else "SIGINT"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handling(signals: tuple[int, ...], handler) -> Iterator[None]:
    """`handler` for `signals` within the block, the previous handlers after it; nothing outside the main thread
    (signal handlers can only be set there)."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main thread."""
    def handler(signum, frame):
        raise Terminated(signum)

    with _handling(STOP_SIGNALS, handler):
        yield


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Within the block SIGINT, SIGTERM and SIGHUP are only recorded; the first one is raised after it."""
    received: list[int] = []

    def record(signum, frame):
        received.append(signum)

    with _handling((signal.SIGINT, *STOP_SIGNALS), record):
        yield
    if received:
        raise KeyboardInterrupt() if received[0] == signal.SIGINT else Terminated(received[0])
