"""Counts the reliability tests report (faults injected, commits interrupted ...).

``record`` adds to a counter; at the end of the session the conftest writes
them, with the test outcomes, to ``build/reliability-figures.json`` for
``docs/reliability.md``. Under pytest-xdist each worker counts its own and
the controller writes the sum (tests/support/parallel.py).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def record(name: str, amount: int = 1) -> None:
    with _lock:
        _counts[name] += amount


def counts() -> dict[str, int]:
    """The counters so far (what a pytest-xdist worker sends to the controller)."""
    with _lock:
        return dict(_counts)


def merge(other: dict[str, int]) -> None:
    """Add another process's counters (a worker's, on the controller)."""
    with _lock:
        _counts.update(other)


def write(path: Path, outcomes: dict[str, int]) -> None:
    if not _counts:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"figures": dict(sorted(_counts.items())), "tests": outcomes}, indent=2) + "\n")
