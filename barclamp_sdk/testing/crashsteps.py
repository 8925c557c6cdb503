"""A crash at every step: kill an operation after its k-th write, for every k, then run it again.

For one operation (a commit, an edit, a deactivate, ...) on a state that
``setup`` builds, :func:`crash_at_every_step` first runs it undisturbed
through a counting proxy (its number of write requests, and the final state),
then for each k from 1 to that number: builds the state again, runs the
operation in a child process that is killed with SIGKILL right after the
server answered its k-th write (before the child hears the answer), runs the
same operation again, and compares the final state with the undisturbed one:
roles, proposal documents and history, queue, decrypted secrets, the number of
secret items; and no lock item may remain (the killed child's items that the
rerun did not need are swept, :meth:`LockManager.sweep`, once their leases
ended; nothing else may be left). With ``other``, another operator's command
runs between the kill and the rerun, in a process of its own; the end must
then be that of an undisturbed run of other then action, or of action, other,
action. Barclamp authors can run it on
their own barclamps::

    report = crash_at_every_step(fresh, setup, ["widget", "default", "commit"], env)
    assert report.mismatches == []

The child is ``python -m barclamp_sdk.testing.crashsteps BARCLAMP NAME ACTION [KEY=VALUE...]``
(actions: commit, edit, deactivate, dequeue, delete, discover, renumber, allocate, rotate, batch: see :func:`perform`), connected by the
environment (``CHEF_SERVER_URL`` is pointed at the proxy).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError
from barclamp_sdk.model.naming import HISTORY_BAG, LOCKS_BAG, PROPOSALS_BAG, SECRETS_BAG
from barclamp_sdk.model.batch import parse as parse_scenario
from barclamp_sdk.model.secrets import is_reference, load_secret
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
    #: Lock items of a killed child the rerun did not need, swept once their leases ended.
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


def state(crowbar: Crowbar, *, exact: bool = True) -> dict[str, Any]:
    """What must come out the same: roles, documents, history, queue, decrypted secrets, the
    number of secret items. ``exact=False``: without the commit status each revision was saved
    with (whether an interrupted commit was noted depends on when the kill came) and the
    machine roles' write counters (how often a role was written depends on how far the killed
    command got)."""
    chef = crowbar.chef
    roles = {name: chef.roles.get(name) for name in sorted(chef.roles.list())}
    docs, history, secrets = {}, {}, {}
    for bag, into in ((PROPOSALS_BAG, docs), (HISTORY_BAG, history)):
        try:
            ids = chef.data_bags.items(bag)
        except NotFound:
            continue
        for item_id in sorted(ids):
            item = chef.data_bags.get_item(bag, item_id)
            if bag == HISTORY_BAG and not exact:
                for status in ("crowbar-status", "crowbar-failed", "crowbar-committed"):
                    for deployment in (item.get("document", {}).get("deployment") or {}).values():
                        if isinstance(deployment, dict):
                            deployment.pop(status, None)
            into[item_id] = _without_versions(item, crowbar, secrets)
    if not exact:
        for role in roles.values():
            ((role.get("default_attributes") or {}).get("crowbar") or {}).pop("crowbar-revision", None)
    roles = {name: _without_versions(role, crowbar, secrets) for name, role in roles.items()}
    try:  # versions no document refers to any more are collected: no orphans
        stored = len(chef.data_bags.items(SECRETS_BAG))
    except NotFound:
        stored = 0
    addresses = {f"{r['network']}/{r['address']}": r["machine"] for r in crowbar.addresses.items()}
    return {"roles": roles, "proposals": docs, "history": history, "secrets": secrets,
            "secret items": {"count": stored}, "address items": addresses}


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
                found.append(f"{part}/{key} ({_first_difference(a.get(key), b.get(key))})")
    return found


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two values first differ: ``path: expected != got``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '.'}: {str(a)[:80]} != {str(b)[:80]}"


def crash_at_every_step(fresh: Callable[[], Crowbar], setup: Callable[[Crowbar], None], action: list[str],
                        env: dict[str, str], *, other: list[str] | None = None,
                        stride: int = 1, viewer: Callable[[Crowbar], Crowbar] | None = None,
                        timeout: float = 120.0) -> StepReport:
    """Kill ``action`` after each of its writes in turn, rerun it, compare with an undisturbed run.

    ``fresh`` empties the server and returns a client; ``setup`` builds the
    starting state; ``env`` is the child's environment (how it reaches the
    server and finds the barclamps). With ``other`` (an action), another
    operator runs it after the kill, before the action runs again; the end
    must then be that of an undisturbed other then action, or action, other, action. ``stride`` tries every
    stride-th k only (and the last; default: every k); ``viewer`` gives the client the states are
    read with (say, one holding a rotated secret). After the rerun, the killed
    child's lock items are swept once their leases have ended
    (:meth:`~barclamp_sdk.model.locks.LockManager.sweep`): none may remain.
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

    look = viewer or (lambda c: c)

    def undisturbed(other_first: bool) -> tuple[dict[str, Any], _KillingProxy]:
        crowbar = fresh()
        setup(crowbar)
        ok = _another_operator(other, env, timeout) if other is not None and other_first else None
        with _KillingProxy(crowbar.chef.config.server_url) as proxy:
            done = run_child(proxy)
        if done.returncode not in (0, 3):
            raise AssertionError(f"the undisturbed {' '.join(action)} failed: {done.stderr.decode()[-2000:]}")
        if other is not None and not other_first:
            ok = _another_operator(other, env, timeout)
            perform(crowbar, action)
        return {**state(look(crowbar), exact=other is None), "other succeeded": {"": ok}}, proxy

    # Killed, then another operator's command, then the action again: the end
    # must be one of the two serial runs, other then action (the killed action
    # had not taken effect), or action, other, action (it had).
    expected, proxy = undisturbed(False)
    allowed = [expected] + ([undisturbed(True)[0]] if other is not None else [])
    name = " ".join(action) + (f" (after the kill, another operator's {' '.join(other)} first)" if other else "")
    report = StepReport(name, proxy.writes, requests=list(proxy.written))
    for k in sorted({*range(1, proxy.writes + 1, stride), proxy.writes} - {0}):
        crowbar = fresh()
        setup(crowbar)
        with _KillingProxy(crowbar.chef.config.server_url) as killer:
            killer.kill_at = k
            run_child(killer)
        again = crowbar
        again.locks.clock_skew = 0.5  # one host, one clock: the dead child's locks are taken over soon
        ok = _another_operator(other, env, timeout) if other is not None else None
        try:
            perform(again, action)
        except CrowbarError as exc:
            report.mismatches.append(f"k={k}: the rerun failed: {exc}")
            continue
        report.steps += 1
        left = _lock_items(again)
        dead = [i for i in left if _dead_child_lock(again, i, killer.pid)]
        if len(dead) < len(left):
            report.mismatches.append(f"k={k}: lock items of live holders left: {', '.join(sorted(set(left) - set(dead)))}")
        if dead:  # the rerun had nothing left to do under them: swept once their leases ended
            _wait_until_expired(again, dead)
            report.dead_locks += len(again.locks.sweep())
            if _lock_items(again):
                report.mismatches.append(f"k={k}: lock items left after a sweep: {', '.join(_lock_items(again))}")
        got = {**state(look(again), exact=other is None), "other succeeded": {"": ok}}
        differing = min((_differences(one, got) for one in allowed), key=len)
        if differing:
            report.mismatches.append(f"k={k}: differs in {', '.join(differing[:5])}")
    return report


def _another_operator(other: list[str], env: dict[str, str], timeout: float) -> bool:
    """Run ``other`` as another operator would, in a process of its own; whether it succeeded.

    It may fail for a reason of the state (an edit of a proposal deleted
    meanwhile): so it does in one of the undisturbed orders too.
    """
    done = subprocess.run([sys.executable, "-m", "barclamp_sdk.testing.crashsteps", *other],
                          env={**env, "CRASHSTEPS_LEASE": "30"}, capture_output=True, timeout=timeout)
    return done.returncode == 0


def _lock_items(crowbar: Crowbar) -> list[str]:
    chef = crowbar.chef
    return sorted(chef.data_bags.items(LOCKS_BAG)) if LOCKS_BAG in chef.data_bags.list() else []


def _wait_until_expired(crowbar: Crowbar, names: list[str]) -> None:
    """Sleep until the leases of ``names`` (a dead process's, never renewed again) have ended."""
    for name in names:
        item = crowbar.locks.inspect(name)
        while item is not None and not crowbar.locks.expired(item):
            time.sleep(max(0.05, float(item.get("expires_at", 0)) + crowbar.locks.clock_skew - time.time()))


def perform(crowbar: Crowbar, action: list[str]) -> None:
    """Run one action: ``[barclamp, name, VERB, KEY=VALUE...]``.

    Verbs: commit, edit (the pairs are the settings), deactivate, dequeue,
    delete; discover (every node not yet a machine; barclamp and name unused); renumber (edit, then
    commit); allocate (``network=`` and ``user=``: every machine; barclamp and name unused); rotate (``file=`` the new secret; barclamp and name unused) and
    batch (``file=`` the scenario to apply; barclamp and name unused).
    """
    barclamp, name, verb, *rest = action
    proposals = crowbar.proposals
    options = dict(pair.split("=", 1) for pair in rest)
    if verb == "rotate":
        crowbar.secrets.rotate(load_secret(options["file"]))
    elif verb == "batch":
        crowbar.batch.apply(parse_scenario(Path(options["file"]).read_text(), source=options["file"]))
    elif verb == "discover":  # every node not yet a machine (allocating its admin and bmc addresses)
        skipped: dict[str, str] = {}
        crowbar.machines.discover(skipped=skipped)
        if skipped:
            raise CrowbarError("; ".join(f"{n}: {why}" for n, why in sorted(skipped.items())))
    elif verb == "renumber":  # the network proposal edited (the pairs), then committed: machines move in waves
        proposals.set(barclamp, name, options)
        proposals.commit(barclamp, name)
    elif verb == "allocate":  # an address of ``network=`` for every machine, for ``user=``
        report = crowbar.addresses.allocate(options["network"], [r.name for r in crowbar.machines.list()],
                                            user=options["user"])
        if report.refused:
            raise CrowbarError("; ".join(f"{n}: {why}" for n, why in sorted(report.refused.items())))
    elif verb == "commit":
        proposals.commit(barclamp, name)
    elif verb == "edit":
        proposals.set(barclamp, name, options)
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
