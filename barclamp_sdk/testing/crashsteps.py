"""A crash at every step: kill an operation after its k-th write, for every k, then run it again.

For one operation (a commit, an edit, a deactivate, ...) on a state that
``setup`` builds, :func:`crash_at_every_step` first runs it undisturbed
through a counting proxy (its number of write requests, and the final state),
then for each k from 1 to that number: puts the starting state back, runs the
operation in a child process that is killed with SIGKILL right after the
server answered its k-th write (before the child hears the answer; nothing it
sent after reaches the server), runs the same operation again, and compares
the final state with the undisturbed one: roles, proposal documents and
history, queue, decrypted secrets, the number of secret items; and no lock
item may remain. The rerun takes the dead child's locks over at once (its
process is gone, :mod:`barclamp_sdk.model.holders`), never waiting for a
lease; the child's items the rerun did not need are swept
(:meth:`LockManager.sweep`). With ``other``, another operator's command runs
between the kill and the rerun, in a process of its own; the end must then be
that of an undisturbed run of other then action, or of action, other, action.

The starting state is built once and put back before each k by a database
restore (:class:`~barclamp_sdk.testing.restore.DatabaseSnapshot`, goiardi on
PostgreSQL; on the in-memory store, by ``fresh`` and ``setup`` again). Each
child is forked from a launcher that imported barclamp_sdk and the barclamps
once. Barclamp authors can run it on their own barclamps::

    report = crash_at_every_step(fresh, setup, ["widget", "default", "commit"], env,
                                 snapshot=chef_server.database_snapshot(), client=new_client)
    assert report.mismatches == []

A child runs ``python -m barclamp_sdk.testing.crashsteps BARCLAMP NAME ACTION [KEY=VALUE...]``'s
:func:`main` (actions: commit, edit, revert, deactivate, dequeue, delete, discover, renumber,
allocate, rotate, batch: see :func:`perform`), connected by the environment (``CHEF_SERVER_URL``
is pointed at the proxy). ``CRASHSTEPS_DIRECT_READ_LIMIT=0`` sends the child's commits
through the search snapshot (the path of commits of more than 32 machines).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, NoReturn

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError
from barclamp_sdk.model.commit import committer
from barclamp_sdk.model.naming import HISTORY_BAG, LOCKS_BAG, PROPOSALS_BAG, SECRETS_BAG
from barclamp_sdk.model.batch import parse as parse_scenario
from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.secrets import is_reference, load_secret
from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.restore import DatabaseSnapshot

#: Lease of each child's locks: long (a busy machine must not end it); the rerun takes a
#: killed child's locks over at once, its process being gone (:mod:`barclamp_sdk.model.holders`).
CHILD_LEASE = 30.0
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

    def watch(self, pid: int) -> None:
        """Kill ``pid`` (the child, before it begins) at the k-th write."""
        self.pid = pid

    def _next_fault(self, method: str, path: str) -> str | None:
        """Once the child is killed, nothing it sent before it died goes to the server."""
        return "drop" if self.killed.is_set() else super()._next_fault(method, path)

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
                for status in ("crowbar-status", "crowbar-failed"):
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
                        snapshot: DatabaseSnapshot | None = None, client: Callable[[], Crowbar] | None = None,
                        stride: int = 1, viewer: Callable[[Crowbar], Crowbar] | None = None,
                        timeout: float = 120.0) -> StepReport:
    """Kill ``action`` after each of its writes in turn, rerun it, compare with an undisturbed run.

    ``fresh`` empties the server and returns a client; ``setup`` builds the
    starting state; ``env`` is the child's environment (how it reaches the
    server and finds the barclamps). With ``snapshot`` (a
    :class:`~barclamp_sdk.testing.restore.DatabaseSnapshot`, as
    ``chef_server.database_snapshot()`` gives, not taken yet; None with the
    in-memory store) ``setup`` runs once, the snapshot is taken then and dropped
    at the end, and the database is put back before each run, and
    ``client`` gives a new client on the server as it is (an old one's caches
    would be stale); without, each run starts with ``fresh`` and ``setup``.
    With ``other`` (an action), another operator runs it after the kill, before
    the action runs again; the end must then be that of an undisturbed other
    then action, or action, other, action. ``stride`` tries every stride-th k
    only (and the last; default: every k); ``viewer`` gives the client the
    states are read with (say, one holding a rotated secret). The rerun takes
    the killed child's locks over at once (its process is gone) and may not
    wait for a lease; after it, the killed child's lock items are swept
    (:meth:`~barclamp_sdk.model.locks.LockManager.sweep`): none may remain.
    """
    if snapshot is not None and client is None:
        raise ValueError("crash_at_every_step: a snapshot needs client= (a new client after each restore)")
    look = viewer or (lambda c: c)
    launcher = _Launcher(env)

    def start() -> Crowbar:
        if snapshot is None:
            crowbar = fresh()
            setup(crowbar)
            return crowbar
        if not snapshot.taken:
            setup(fresh())
            snapshot.take()
        snapshot.restore()
        assert client is not None
        return client()

    def run_child(proxy: _KillingProxy) -> subprocess.CompletedProcess[str]:
        try:
            return launcher.run(action, {**env, "CHEF_SERVER_URL": proxy.url, "CRASHSTEPS_LEASE": str(CHILD_LEASE)},
                                started=proxy.watch, timeout=timeout)
        finally:
            proxy.settle()  # nothing the killed child sent reaches the server later

    def another_operator() -> bool:
        """``other`` in a process of its own; whether it succeeded (it may fail for a reason of
        the state, an edit of a proposal deleted meanwhile: so it does in one of the undisturbed
        orders too). Like the rerun, it may not wait for a killed child's lease."""
        assert other is not None
        waits = {"CRASHSTEPS_LEASE": str(CHILD_LEASE), "CRASHSTEPS_LOCK_TIMEOUT": str(CHILD_LEASE)}
        return launcher.run(other, {**env, **waits}, timeout=timeout).returncode == 0

    def undisturbed(other_first: bool) -> tuple[dict[str, Any], _KillingProxy]:
        crowbar = start()
        ok = another_operator() if other is not None and other_first else None
        with _KillingProxy(crowbar.chef.config.server_url) as proxy:
            done = run_child(proxy)
        if done.returncode != 0:
            raise AssertionError(f"the undisturbed {' '.join(action)} failed: {done.stderr[-2000:]}")
        if other is not None and not other_first:
            ok = another_operator()
            perform(crowbar, action)
        return {**state(look(crowbar), exact=other is None), "other succeeded": {"": ok}}, proxy

    try:
        # Killed, then another operator's command, then the action again: the end
        # must be one of the two serial runs, other then action (the killed action
        # had not taken effect), or action, other, action (it had).
        expected, proxy = undisturbed(False)
        allowed = [expected] + ([undisturbed(True)[0]] if other is not None else [])
        name = " ".join(action) + (f" (after the kill, another operator's {' '.join(other)} first)" if other else "")
        report = StepReport(name, proxy.writes, requests=list(proxy.written))
        for k in sorted({*range(1, proxy.writes + 1, stride), proxy.writes} - {0}):
            _step(k, start, run_child, another_operator if other is not None else None, action, allowed, look, report)
    finally:
        launcher.close()
        if snapshot is not None:
            snapshot.drop()
    return report


def _step(k: int, start: Callable[[], Crowbar], run_child: Callable[[_KillingProxy], Any],
          another_operator: Callable[[], bool] | None, action: list[str], allowed: list[dict[str, Any]],
          look: Callable[[Crowbar], Crowbar], report: StepReport) -> None:
    """One k of :func:`crash_at_every_step`: kill after the k-th write, rerun, compare."""
    again = start()
    with _KillingProxy(again.chef.config.server_url) as killer:
        killer.kill_at = k
        run_child(killer)
    if not killer.killed.is_set():
        report.mismatches.append(f"k={k}: the child ended before its {k}-th write")
        return
    # Its process is gone, so its locks are taken over at once: waiting for one of
    # them until its lease ended would time out first.
    again.locks.timeout = CHILD_LEASE
    ok = another_operator() if another_operator is not None else None
    try:
        perform(again, action)
    except CrowbarError as exc:
        report.mismatches.append(f"k={k}: the rerun failed: {exc}")
        return
    report.steps += 1
    left = _lock_items(again)
    dead = [i for i in left if _dead_child_lock(again, i, killer.pid)]
    if len(dead) < len(left):
        report.mismatches.append(f"k={k}: lock items of live holders left: {', '.join(sorted(set(left) - set(dead)))}")
    if dead:  # the rerun had nothing left to do under them: swept at once (their holder is gone)
        report.dead_locks += len(again.locks.sweep())
        if _lock_items(again):
            report.mismatches.append(f"k={k}: lock items left after a sweep: {', '.join(_lock_items(again))}")
    got = {**state(look(again), exact=another_operator is None), "other succeeded": {"": ok}}
    differing = min((_differences(one, got) for one in allowed), key=len)
    if differing:
        report.mismatches.append(f"k={k}: differs in {', '.join(differing[:5])}")


def _lock_items(crowbar: Crowbar) -> list[str]:
    chef = crowbar.chef
    return sorted(chef.data_bags.items(LOCKS_BAG)) if LOCKS_BAG in chef.data_bags.list() else []


#: The launcher's argument (``python -m barclamp_sdk.testing.crashsteps --launcher``).
LAUNCHER = "--launcher"


class _Launcher:
    """Starts each child as an ``os.fork()`` of one process that imported barclamp_sdk and the
    barclamps once: a child starts in milliseconds, not after a new interpreter's imports.

    One child at a time: the launcher answers its pid, waits for a go (so the
    proxy knows whom to kill before the first write), then its exit code.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "barclamp_sdk.testing.crashsteps", LAUNCHER],
                                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._logs = tempfile.TemporaryDirectory(prefix="crashsteps-")
        self._runs = 0

    def run(self, action: list[str], env: dict[str, str], *, timeout: float,
            started: Callable[[int], None] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``action`` in a child with environment ``env``; ``started`` hears its pid before it
        begins; killed after ``timeout`` seconds. Its output is the result's ``stderr``."""
        self._runs += 1
        log = Path(self._logs.name) / f"{self._runs}.log"
        self._send({"action": action, "env": env, "log": str(log)})
        pid = int(self._line())
        if started is not None:
            started(pid)
        self._send("go")
        timer = threading.Timer(timeout, _kill, (pid,))
        timer.start()
        try:
            code = int(self._line())
        finally:
            timer.cancel()
        return subprocess.CompletedProcess(action, code, "", log.read_text(errors="replace"))

    def _send(self, message: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise AssertionError(f"the crash-steps launcher ended (exit {self._process.wait()})")
        return line

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._logs.cleanup()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _serve() -> int:
    """The launcher's loop (see :class:`_Launcher`)."""
    BarclampRegistry()  # every barclamp imported once, before any fork
    while line := sys.stdin.readline():
        request = json.loads(line)
        go, ready = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready)
            _child(request, go)
        os.close(go)
        print(pid, flush=True)
        sys.stdin.readline()  # "go": the harness knows the pid
        os.write(ready, b"g")
        os.close(ready)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
    return 0


def _child(request: dict[str, Any], go: int) -> NoReturn:
    """A forked child: wait for the go, run the action with its environment and output file."""
    code = 1
    try:
        os.read(go, 1)
        os.close(go)
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ.clear()
        os.environ.update(request["env"])
        code = main(request["action"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported on the child's output, as an interpreter would
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def perform(crowbar: Crowbar, action: list[str]) -> None:
    """Run one action: ``[barclamp, name, VERB, KEY=VALUE...]``.

    Verbs: commit, edit (the pairs are the settings), revert (to ``revision=``, then
    commit), deactivate, dequeue, delete; renumber (edit, then commit); discover (every
    node not yet a machine), allocate (``network=`` and ``user=``: every machine), rotate
    (``file=`` the new secret) and batch (``file=`` the scenario to apply), these four with
    barclamp and name unused.
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
    elif verb == "revert":  # to ``revision=``, and commit it (`proposal revert NAME REV --commit`)
        proposals.revert(barclamp, name, int(options["revision"]), commit=True)
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


def main(argv: list[str]) -> int:
    """A child: ``argv`` is the action (``--launcher``: serve forked children, see :class:`_Launcher`)."""
    if argv == [LAUNCHER]:
        return _serve()
    if "CRASHSTEPS_DIRECT_READ_LIMIT" in os.environ:  # 0: every commit through the search snapshot
        committer.DIRECT_READ_LIMIT = int(os.environ["CRASHSTEPS_DIRECT_READ_LIMIT"])
    crowbar = connect(lock_lease=float(os.environ.get("CRASHSTEPS_LEASE", CHILD_LEASE)))
    if "CRASHSTEPS_LOCK_TIMEOUT" in os.environ:
        crowbar.locks.timeout = float(os.environ["CRASHSTEPS_LOCK_TIMEOUT"])
    perform(crowbar, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
