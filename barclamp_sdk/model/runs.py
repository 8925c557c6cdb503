"""What machines report about their chef-client runs, and waiting for them (rollouts in waves).

A machine reports how its last run ended under ``crowbar_wall.last_run`` in
its own node object (a fact it owns, written by the shipped run handler,
``barclamp_sdk/node/handlers/crowbar_last_run.rb``): when it started and
ended, whether it succeeded, and the ``crowbar-revision`` of its
``crowbar-<node>`` role the run compiled with. A machine has run since its
role was written when that revision is at least the one written (no clocks
compared).

:class:`RunWatcher` waits for machines by reading their nodes by name (never
by search, which may lag behind writes), at a bounded rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.model import stopping
from barclamp_sdk.model.parallel import run_parallel

#: Node attribute levels, highest precedence first (as Chef merges them).
_LEVELS = ("automatic", "override", "normal", "default")


@dataclass(frozen=True)
class RunReport:
    """How a machine's last chef-client run ended, as the machine reports it."""

    success: bool
    role_revision: int
    ended_at: str = ""
    error: str = ""


def reported_run(node: Mapping[str, Any]) -> RunReport | None:
    """The last run a node object reports (None: none reported, or an odd shape)."""
    for level in _LEVELS:
        wall = (node.get(level) or {}).get("crowbar_wall")
        run = wall.get("last_run") if isinstance(wall, dict) else None
        if isinstance(run, dict) and isinstance(run.get("success"), bool):
            try:
                revision = int(run.get("role_revision") or 0)
            except (TypeError, ValueError):
                return None
            return RunReport(run["success"], revision, str(run.get("ended_at", "")),
                             str(run.get("error", ""))[:500])
    return None


@dataclass(frozen=True)
class RunOutcome:
    """What became of one machine of a wave: ``converged``, ``failed`` or ``timed out``."""

    node: str
    outcome: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "converged"


class RunWatcher:
    """Waits until machines have run chef-client with (at least) given role revisions.

    Each round reads the nodes still awaited, by name, at most ``rate`` reads
    a second (and a round at most every ``interval`` seconds).
    """

    def __init__(self, chef: ChefClient, *, interval: float = 2.0, rate: float = 20.0, workers: int = 4) -> None:
        self.chef = chef
        self.interval = interval
        self.rate = rate
        self.workers = workers

    def check(self, wanted: Mapping[str, int]) -> dict[str, RunOutcome]:
        """One round: the machines whose run since their revision is reported (others left out)."""
        names = sorted(wanted)
        nodes = run_parallel(self.chef.nodes.find, names, workers=self.workers, name="runs")
        done: dict[str, RunOutcome] = {}
        for name, node in zip(names, nodes):
            report = reported_run(node) if node is not None else None
            if report is None or report.role_revision < wanted[name]:
                continue
            done[name] = (RunOutcome(name, "converged") if report.success else
                          RunOutcome(name, "failed", report.error or "chef-client failed"))
        return done

    def wait(self, wanted: Mapping[str, int], timeout: float, *,
             between: Callable[[int], None] | None = None) -> dict[str, RunOutcome]:
        """Every machine's outcome once each reported a run, or ``timeout`` seconds passed.

        ``between(awaited)`` is called after each round that leaves machines
        awaited (to renew locks, report progress); a stop request (SIGINT)
        raises :class:`~barclamp_sdk.errors.Interrupted`.
        """
        deadline = time.monotonic() + timeout
        outcomes: dict[str, RunOutcome] = {}
        pending = dict(wanted)
        while pending:
            started = time.monotonic()
            found = self.check(pending)
            outcomes.update(found)
            for name in found:
                pending.pop(name)
            if not pending:
                break
            now = time.monotonic()
            if now >= deadline:
                for name in pending:
                    outcomes[name] = RunOutcome(name, "timed out",
                                                f"no chef-client run reported within {timeout:g}s")
                break
            if between is not None:
                between(len(pending))
            spacing = max(self.interval, len(pending) / self.rate) - (time.monotonic() - started)
            stopping.pause(min(max(spacing, 0.0), max(deadline - time.monotonic(), 0.0)))
        return {name: outcomes[name] for name in sorted(outcomes)}
