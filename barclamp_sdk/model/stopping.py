"""Stopping a command cleanly on SIGINT or SIGTERM: at the next write boundary.

While a command writes (a commit, a deactivate: :func:`protected`), the first
SIGINT or SIGTERM only asks it to stop: every write checks first
(:func:`check`, called by :meth:`~barclamp_sdk.model.locks.LockManager.ensure_valid`
before each write), so what is in flight finishes, nothing more is sent, the
proposal records how far it got, the locks are released and
:class:`~barclamp_sdk.errors.Interrupted` reaches the caller. Further signals
while it stops change nothing (the state stays resumable). Outside a
protected section the signal interrupts as Python's default does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from barclamp_sdk.errors import Interrupted

_stop = threading.Event()
_why: list[str] = []
_depth = 0
_guard = threading.Lock()


def request_stop(why: str = "SIGINT") -> None:
    """Ask the writes in progress to stop at the next boundary."""
    if not _stop.is_set():
        _why.append(why)
    _stop.set()


def requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raise Interrupted if a stop was requested (call before each write)."""
    if _stop.is_set():
        why = _why[0] if _why else "SIGINT"
        raise Interrupted(f"{why}: stopped before the next write", signal=why)


def reset() -> None:
    """Forget a stop request (a new command starts)."""
    _stop.clear()
    _why.clear()


@contextlib.contextmanager
def protected() -> Iterator[None]:
    """A section whose writes stop at a boundary instead of being cut by a signal."""
    global _depth
    with _guard:
        _depth += 1
    try:
        yield
    finally:
        with _guard:
            _depth -= 1


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _depth > 0 or _stop.is_set():
        request_stop(name)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pause(seconds: float) -> None:
    """Sleep up to ``seconds``, raising Interrupted at once when a stop is requested."""
    if seconds > 0:
        _stop.wait(seconds)
    check()
