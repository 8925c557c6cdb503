"""Progress that names its phase, for long operations (commit, deactivate, rollouts ...).

The model reports :class:`Phase` values to a callback it is handed; it never
prints (the CLI shows them with rich on a terminal, nothing in ``--json``
mode). A :class:`Reporter` is also the ``Callable[[int], None]`` progress the
writers advance per machine written, so a phase ``writing`` counts ``n/N``::

    reporter = Reporter(print)
    reporter.phase("locking", "locking proposal nova/default")
    reporter.phase("writing", total=20)
    reporter(1)                       # Phase("writing", "writing 1/20", 1, 20)

Any operation taking ``phases=`` (``Proposals.commit``, ``Proposals.deactivate``)
builds one with :func:`reporter`; others reuse it the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

#: The phases operations report (others may add their own names).
PHASES = ("locking", "validating", "writing", "waiting", "finishing")


@dataclass(frozen=True)
class Phase:
    """One step of a long operation: ``name`` (see :data:`PHASES`), a line saying it, a count."""

    name: str
    label: str
    done: int = 0
    total: int = 0


PhaseCallback = Callable[[Phase], None]


class Reporter:
    """Reports phases to ``phases`` and counts machines written (also forwarding them to ``counts``)."""

    def __init__(self, phases: PhaseCallback | None = None, counts: Callable[[int], None] | None = None) -> None:
        self.phases = phases
        self.counts = counts
        self.current = Phase("", "")
        self._guard = threading.Lock()

    def phase(self, name: str, label: str | None = None, *, total: int = 0) -> None:
        """Enter phase ``name`` (``label`` says it; ``total``: machines it counts)."""
        with self._guard:
            self.current = Phase(name, label or (f"{name} 0/{total}" if total else name), 0, total)
            current = self.current
        if self.phases is not None:
            self.phases(current)

    def __call__(self, count: int) -> None:
        """``count`` more machines done in the current phase."""
        with self._guard:
            c = self.current
            done = c.done + count
            label = f"{c.name} {done}/{c.total}" if c.total else c.label
            self.current = Phase(c.name, label, done, c.total)
            current = self.current
        if self.counts is not None:
            self.counts(count)
        if self.phases is not None:
            self.phases(current)


def reporter(progress: Callable[[int], None] | Reporter | None = None,
             phases: PhaseCallback | None = None) -> Reporter:
    """``progress`` as a :class:`Reporter` (a plain count callback, or None, is wrapped)."""
    if isinstance(progress, Reporter):
        if phases is not None and progress.phases is None:
            progress.phases = phases
        return progress
    return Reporter(phases, progress)
