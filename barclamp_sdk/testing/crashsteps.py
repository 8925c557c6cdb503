"""A crash at every step: kill an operation after its k-th write, for every k, then run it again.

For one operation (a commit, an edit, a deactivate, ...) on a state that
``setup`` builds, :func:`crash_at_every_step` first runs it undisturbed
through a counting proxy (its number of write requests, and the final state),
then for each k from 1 to that number: builds the state again, runs the
operation in a child process that is killed with SIGKILL right after the
server answered its k-th write (before the child hears the answer), runs the
same operation again, and compares the final state with the undisturbed one:
roles, proposal documents and history, queue, decrypted secrets; and no lock
item may remain. Barclamp authors can run it on their own barclamps::

    report = crash_at_every_step(fresh, setup, ["widget", "default", "commit"], env)
    assert report.mismatches == []

The child is ``python -m barclamp_sdk.testing.crashsteps BARCLAMP NAME ACTION [KEY=VALUE...]``
(actions: commit, edit, deactivate, dequeue, delete), connected by the
environment (``CHEF_SERVER_URL`` is pointed at the proxy).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError
from barclamp_sdk.model.naming import HISTORY_BAG, LOCKS_BAG, PROPOSALS_BAG
from barclamp_sdk.model.secrets import is_reference
from barclamp_sdk.testing.faultproxy import FaultProxy

#: Lease of the child that is killed: short, so the rerun soon takes its locks over.
CHILD_LEASE = 2.0
WRITES = ("PUT", "POST", "DELETE")
#: Keys whose values differ between any two runs (times, who, fingerprints of those).
VOLATILE = frozenset({"saved_at", "saved_by", "queued_at", "state_change_time", "crowbar-fingerprint"})


@dataclass
class StepReport:
    """What :func:`crash_at_every_step` tried and found."""

    operation: str
    writes: int
    steps: int = 0
    mismatches: list[str] = field(default_factory=list)
    #: Expired lock items of a killed child left after a rerun that needed no lock (taken over when needed).
    dead_locks: int = 0
    #: (method, path) of each write of the undisturbed run, in order.
    requests: list[tuple[str, str]] = field(default_factory=list)


class _KillingProxy(FaultProxy):
    """Counts write requests; after the server answered the k-th, kills ``pid`` (SIGKILL)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.writes = 0
        self.written: list[tuple[str, str]] = []
        self.kill_at: int | None = None
        self.pid: int | None = None
        self.killed = threading.Event()

    def after_forward(self, method: str, path: str) -> bool:
        """Called once a request was answered by the server; True: drop the answer."""
        if method not in WRITES or "/search/" in path:  # a search is a POST, not a write
            if self.killed.is_set():
                return True
            return False
        with self._lock:
            self.writes += 1
            self.written.append((method, path))
            fire = self.kill_at is not None and self.writes == self.kill_at and self.pid is not None
        if fire:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGKILL)
            self.killed.set()
        return fire or self.killed.is_set()


def state(crowbar: Crowbar) -> dict[str, Any]:
    """What must come out the same: roles, documents, history, queue, decrypted secrets."""
    chef = crowbar.chef
    roles = {name: chef.roles.get(name) for name in sorted(chef.roles.list())}
    docs, history, secrets = {}, {}, {}
    for bag, into in ((PROPOSALS_BAG, docs), (HISTORY_BAG, history)):
        try:
            ids = chef.data_bags.items(bag)
        except NotFound:
            continue
        for item_id in sorted(ids):
            into[item_id] = _without_versions(chef.data_bags.get_item(bag, item_id), crowbar, secrets)
    roles = {name: _without_versions(role, crowbar, secrets) for name, role in roles.items()}
    return {"roles": roles, "proposals": docs, "history": history, "secrets": secrets}


def _without_versions(value: Any, crowbar: Crowbar, secrets: dict[str, Any]) -> Any:
    """``value`` without :data:`VOLATILE` keys, each secret reference replaced by its decrypted
    value (version ids are random)."""
    if is_reference(value):
        try:
            plain = crowbar.secrets.get(value)
        except CrowbarError as exc:
            plain = "<missing>" if "missing" in str(exc) else f"<unreadable: {type(exc).__name__}>"
        secrets[f"{value['key']}"] = plain
        return {"secret": plain}
    if isinstance(value, dict):
        return {k: _without_versions(v, crowbar, secrets) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without_versions(v, crowbar, secrets) for v in value]
    return value


def _dead_child_lock(crowbar: Crowbar, item_id: str, pid: int | None) -> bool:
    """Whether a lock item is held by the killed child (and so by no live process)."""
    item = crowbar.locks.inspect(item_id) or {}
    return pid is not None and str(item.get("owner", "")).split(":")[1:2] == [str(pid)]


def _differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    found = []
    for part in expected:
        a, b = expected[part], got[part]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                found.append(f"{part}/{key}")
    return found


def crash_at_every_step(fresh: Callable[[], Crowbar], setup: Callable[[Crowbar], None], action: list[str],
                        env: dict[str, str], *, rerun: Callable[[Crowbar], None] | None = None,
                        timeout: float = 120.0) -> StepReport:
    """Kill ``action`` after each of its writes in turn, rerun it, compare with an undisturbed run.

    ``fresh`` empties the server and returns a client; ``setup`` builds the
    starting state; ``env`` is the child's environment (how it reaches the
    server and finds the barclamps); ``rerun`` runs instead of the action
    again after the kill (say, another operator's command first, then the action).
    """
    def run_child(proxy: _KillingProxy) -> subprocess.CompletedProcess[bytes]:
        lease = CHILD_LEASE if proxy.kill_at else 30.0
        child = subprocess.Popen([sys.executable, "-m", "barclamp_sdk.testing.crashsteps", *action],
                                 env={**env, "CHEF_SERVER_URL": proxy.url, "CRASHSTEPS_LEASE": str(lease)},
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        proxy.pid = child.pid
        out, err = child.communicate(timeout=timeout)
        return subprocess.CompletedProcess(child.args, child.returncode, out, err)

    crowbar = fresh()
    setup(crowbar)
    with _KillingProxy(crowbar.chef.config.server_url) as proxy:
        done = run_child(proxy)
    if done.returncode not in (0, 3):
        raise AssertionError(f"the undisturbed {' '.join(action)} failed: {done.stderr.decode()[-2000:]}")
    expected = state(crowbar)
    report = StepReport(" ".join(action), proxy.writes, requests=list(proxy.written))
    for k in range(1, proxy.writes + 1):
        crowbar = fresh()
        setup(crowbar)
        with _KillingProxy(crowbar.chef.config.server_url) as killer:
            killer.kill_at = k
            run_child(killer)
        again = crowbar
        again.locks.clock_skew = 0.5  # one host, one clock: the dead child's locks are taken over soon
        try:
            (rerun or (lambda c: perform(c, action)))(again)
        except CrowbarError as exc:
            report.mismatches.append(f"k={k}: the rerun failed: {exc}")
            continue
        report.steps += 1
        leftover = again.chef.data_bags.items(LOCKS_BAG) if LOCKS_BAG in again.chef.data_bags.list() else []
        dead = [i for i in leftover if _dead_child_lock(again, i, killer.pid)]
        if dead:  # the rerun had nothing left to do under them: taken over when next needed
            report.dead_locks += len(dead)
        if len(dead) < len(leftover):
            report.mismatches.append(f"k={k}: lock items left: {', '.join(sorted(set(leftover) - set(dead)))}")
        differing = _differences(expected, state(again))
        if differing:
            report.mismatches.append(f"k={k}: differs in {', '.join(differing[:5])}")
    return report


def perform(crowbar: Crowbar, action: list[str]) -> None:
    """Run one action: ``[barclamp, name, commit|edit|deactivate|dequeue|delete, KEY=VALUE...]``."""
    barclamp, name, verb, *rest = action
    proposals = crowbar.proposals
    if verb == "commit":
        proposals.commit(barclamp, name)
    elif verb == "edit":
        proposals.set(barclamp, name, dict(pair.split("=", 1) for pair in rest))
    elif verb == "deactivate":
        proposals.deactivate(barclamp, name)
    elif verb == "dequeue":
        try:
            proposals.dequeue(barclamp, name)
        except NotFoundError:
            pass  # not queued (any more): done
    elif verb == "delete":
        if crowbar.proposals.store.find(barclamp, name) is not None:  # deleted already: done
            proposals.delete(barclamp, name)
    else:
        raise ValueError(f"unknown action {verb!r}")


def main() -> int:
    crowbar = connect(lock_lease=float(os.environ.get("CRASHSTEPS_LEASE", CHILD_LEASE)))
    perform(crowbar, sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
