"""Counts the reliability tests report (faults injected, commits interrupted ...).

``record`` adds to a counter; at the end of the session the conftest writes
them, with the test outcomes, to ``build/reliability-figures.json`` for
``docs/reliability.md``.
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


def write(path: Path, outcomes: dict[str, int]) -> None:
    if not _counts:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"figures": dict(sorted(_counts.items())), "tests": outcomes}, indent=2) + "\n")
