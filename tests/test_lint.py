"""Static checks of the whole tree: pyflakes finds no undefined name, unused import or dead f-string.

A merge once left ``Crowbar.run_action`` calling a ``NotFoundError`` it never
imported; the suite only noticed on the error path. pyflakes reads every
module without importing it, so such a name fails here first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyflakes.api import checkRecursive
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
TREES = ["barclamp_sdk", "barclamps", "tests", "bench", "examples"]


class _Collect(Reporter):
    def __init__(self) -> None:
        super().__init__(sys.stdout, sys.stderr)
        self.messages: list[str] = []

    def unexpectedError(self, filename, message):  # noqa: N802 - pyflakes' API
        self.messages.append(f"{filename}: {message}")

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802
        self.messages.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message):
        self.messages.append(str(message))


def test_pyflakes_finds_nothing_in_the_tree():
    reporter = _Collect()
    paths = [str(ROOT / t) for t in TREES if (ROOT / t).exists()]
    assert len(paths) == len(TREES), paths
    count = checkRecursive(paths, reporter)
    assert count == 0 and not reporter.messages, "\n".join(reporter.messages)


def test_the_check_reports_an_undefined_name(tmp_path):
    """The check can fail: a module using a name it never imported is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    raise NotFoundError('x')\n")
    reporter = _Collect()
    assert checkRecursive([str(bad)], reporter) == 1
    assert "undefined name 'NotFoundError'" in reporter.messages[0]
