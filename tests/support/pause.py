"""Pause a command right after it has read a proposal, to interleave another one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from barclamp_sdk import Crowbar

WAIT = 120.0  # generous: only a hung test ever waits this long


class Paused:
    """Pauses the first read of a proposal (``store.<method>``) in the thread that runs ``command``."""

    def __init__(self, crowbar: Crowbar, monkeypatch: pytest.MonkeyPatch, method: str = "get") -> None:
        self.read = threading.Event()
        self.go = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        store = crowbar.proposals.store
        original = getattr(store, method)

        def read(barclamp: str, name: str) -> Any:
            proposal = original(barclamp, name)
            if threading.current_thread() is self.thread and not self.read.is_set():
                self.read.set()
                assert self.go.wait(WAIT), "the test never let the paused command go on"
            return proposal

        monkeypatch.setattr(store, method, read)

    def start(self, command: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                command()
            except BaseException as exc:  # reported by the test
                self.error = exc

        self.thread = threading.Thread(target=run, name="paused-command")
        self.thread.start()
        assert self.read.wait(WAIT), "the paused command never read the proposal"

    def finish(self) -> None:
        self.go.set()
        assert self.thread is not None
        self.thread.join(WAIT)
        if self.error is not None:
            raise self.error
