"""Locks on a Chef server, which has no conditional writes.

A lock is a data bag item in ``crowbar_locks``; taking it is a POST, which
the server refuses with 409 when the item exists (an atomic create). The item
says who holds it, why, and until when (a lease, renewed while held).

* An expired lock is taken over safely: the taker first creates the one-shot
  item ``<lock>--takeover--<holder's token>`` (again an atomic create), then
  re-reads the lock and replaces it only if the same expired holder still
  has it. Two takers can never both win. The marker is itself a lock with a
  lease: a taker that died half way leaves a marker that expires and is
  taken over by the same protocol (``<marker>--takeover--<its token>``), so
  no crash at any step blocks a lock for good. After a takeover, the dead
  process's other expired locks and the lock's leftover markers are removed,
  except *resumable* ones: a lock taken with ``resumable=True`` (a commit's
  proposal lock) marks work its holder may have left half done, so only the
  next command on the same object takes it over (and finishes the work);
  :meth:`LockManager.sweep` hands it to ``on_abandoned`` before removing it.
* A lock whose holder is a dead process of this host (it records host, boot,
  pid namespace, pid and start time: :mod:`barclamp_sdk.model.holders`) is
  taken over at once by the same protocol, without waiting for its lease;
  holders on other hosts are taken over only when their lease has ended.
* A wait longer than a second says once what it waits for, who holds it, and
  how long at most (until the lease ends, when the lock is taken over).
* Locks are always taken in one global order (proposals, then the queue, then
  machine shards, then secrets, by name within a kind); a thread that breaks
  the order gets an error instead of a possible deadlock.
* A holder checks its lease before it writes (:meth:`LockManager.ensure_valid`),
  so a process that stalled past its lease stops rather than clobbering the
  process that took over.

Clocks of the processes that share locks must agree within ``clock_skew``
seconds (NTP); a lock counts as expired only that long after its lease ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import (
    ConcurrencyError,
    Conflict,
    CrowbarError,
    LockTimeout,
    NotFound,
)
from barclamp_sdk.model import stopping
from barclamp_sdk.model.holders import PROCESS_KEY, holder_dead, process_identity
from barclamp_sdk.model.naming import LOCKS_BAG
from barclamp_sdk.model.parallel import run_parallel

log = logging.getLogger(__name__)

_RANKS = (("proposal-", 0), ("queue", 1), ("machines-", 2), ("secrets-", 3))
TAKEOVER = "--takeover--"
_SWEEP_KEYS = {"id": ["id"], "owner": ["owner"], "token": ["token"], "expires_at": ["expires_at"], "at": ["at"],
               PROCESS_KEY: [PROCESS_KEY], "resumable": ["resumable"]}


def lock_order(name: str) -> tuple[int, str]:
    """The global order locks are taken in."""
    for prefix, rank in _RANKS:
        if name.startswith(prefix):
            return rank, name
    return 9, name


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Lock:
    """A lock this process holds."""

    name: str
    token: str
    owner: str
    purpose: str
    lease: float
    acquired_at: float
    expires_at: float
    details: dict[str, Any] = field(default_factory=dict)
    lost: bool = False
    depth: int = 1
    #: Its holder's work may be left half done when it dies: see the module docstring.
    resumable: bool = False

    def item(self) -> dict[str, Any]:
        item = {
            "id": self.name, "token": self.token, "owner": self.owner,
            "purpose": self.purpose, "lease": self.lease,
            "acquired_at": self.acquired_at, "expires_at": self.expires_at,
            "details": self.details, PROCESS_KEY: process_identity(),
        }
        if self.resumable:
            item["resumable"] = True
        return item


def holder_process(item: dict[str, Any]) -> str:
    """``host:pid`` of a lock item's holder (its owner without the thread)."""
    owner = str(item.get("owner", ""))
    return owner.rsplit(":", 1)[0] if owner.count(":") >= 2 else owner


def describe(item: dict[str, Any]) -> str:
    """One line about a lock item: holder, purpose, since, lease."""
    since = time.strftime("%H:%M:%S", time.localtime(float(item.get("acquired_at", 0))))
    remaining = float(item.get("expires_at", 0)) - time.time()
    lease = f"lease ends in {remaining:.0f}s" if remaining > 0 else f"lease expired {-remaining:.0f}s ago"
    return f"held by {item.get('owner', '?')} for {item.get('purpose', '?')} since {since}, {lease}"


class LockManager:
    """Takes, renews and releases locks for one process (thread-safe)."""

    def __init__(
        self,
        chef: ChefClient,
        *,
        owner: str | None = None,
        lease: float = 30.0,
        clock_skew: float = 5.0,
        timeout: float = 300.0,
        bag: str = LOCKS_BAG,
        on_abandoned: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_abandoned(name, item)``: called by :meth:`sweep` for a resumable lock item of a
        dead or expired holder, with that lock held by the calling thread, before the item goes."""
        self.chef = chef
        self.on_abandoned = on_abandoned
        self.owner = owner or default_owner()
        self.lease = lease
        self.clock_skew = clock_skew
        self.timeout = timeout
        self.bag = bag
        self._held: dict[str, Lock] = {}
        self._mutex = threading.Lock()
        self._local = threading.local()
        self._renewer: threading.Thread | None = None
        self._bag_ready = False
        #: Locks taken over from expired holders (for tests and reports).
        self.takeovers = 0
        self._taken_over: set[str] = set()
        self._reported: set[str] = set()
        #: The latest a renewal started after its due time, in seconds (for tests and reports).
        self.renew_lateness = 0.0
        #: Lease renewals written by the renewer (writes that grow with time held, not with work).
        self.renewals = 0

    # -- taking and releasing -------------------------------------------------------

    def _thread_held(self) -> list[str]:
        if not hasattr(self._local, "names"):
            self._local.names = []
        return self._local.names  # type: ignore[no-any-return]

    def acquire(self, name: str, purpose: str, *, timeout: float | None = None, resumable: bool = False) -> Lock:
        """Take ``name``, waiting up to ``timeout`` seconds (LockTimeout after).

        ``resumable``: the work done under it may be left half done by a crash
        (see the module docstring).
        """
        held = self._thread_held()
        with self._mutex:
            mine = self._held.get(name)
        if mine is not None and name in held:
            mine.depth += 1  # re-entrant within one thread
            return mine
        if held and lock_order(name) < max(lock_order(n) for n in held):
            raise ConcurrencyError(
                f"lock order violated: taking {name} while holding {', '.join(held)} "
                "(a bug: locks must be taken in the global order)"
            )
        started = time.monotonic()
        deadline = started + (self.timeout if timeout is None else timeout)
        pause = 0.02
        last_seen: dict[str, Any] | None = None
        told = False
        while True:
            lock = self._try_create(name, purpose, resumable)
            if lock is None:
                existing = self._read(name)
                if existing is not None:
                    last_seen = existing
                    if self._takeable(existing) and not self._held_alive_here(existing):
                        lock = self._take_over(name, purpose, existing, resumable=resumable)
            if lock is not None:
                with self._mutex:
                    self._held[name] = lock
                held.append(name)
                self._start_renewer()
                return lock
            if not told and last_seen is not None and time.monotonic() - started > 1.0:
                told = True
                self._say_waiting(name, last_seen, deadline)
            if stopping.requested():
                stopping.check()  # nothing written yet: stop waiting
            if time.monotonic() >= deadline:
                about = describe(last_seen) if last_seen else "held by another process"
                raise LockTimeout(
                    f"could not lock {name} within {self.timeout if timeout is None else timeout:.0f}s: "
                    f"{about}; retry later, or check that process"
                )
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            pause = min(pause * 2, 0.5)

    def took_over_any(self, names: Iterable[str]) -> bool:
        """Whether this process took over any of the locks ``names`` (now or earlier).

        A crashed holder may have left work under them: whoever resumes it looks
        for that work (claims, half-written roles) instead of assuming none.
        """
        return not self._taken_over.isdisjoint(names)

    def _held_alive_here(self, item: dict[str, Any]) -> bool:
        """Whether another thread of this process holds ``item`` and has not lost it
        (its renewal is late: wait for it, never take over one's own live lock)."""
        with self._mutex:
            mine = self._held.get(str(item.get("id")))
        return mine is not None and mine.token == item.get("token") and not mine.lost

    def _say_waiting(self, name: str, item: dict[str, Any], deadline: float) -> None:
        """One line at the start of a long wait: what, who, and how long at most."""
        takeover = float(item.get("expires_at", 0)) + self.clock_skew - time.time()
        give_up = deadline - time.monotonic()
        gone = " (that process is gone)" if holder_dead(item) else ""
        if takeover < give_up:
            most = f"at most {max(0.0, takeover):.0f}s (then its lease has ended and the lock is taken over)"
        else:
            most = f"up to {give_up:.0f}s (then this command gives up)"
        log.warning("waiting for lock %s, %s%s: %s", name, describe(item), gone, most)

    def _new_lock(self, name: str, purpose: str, resumable: bool = False) -> Lock:
        now = time.time()
        return Lock(name=name, token=uuid.uuid4().hex, owner=f"{self.owner}:{threading.get_ident()}",
                    purpose=purpose, lease=self.lease, acquired_at=now, expires_at=now + self.lease,
                    resumable=resumable)

    def _ensure_bag(self) -> None:
        if not self._bag_ready:
            self.chef.data_bags.ensure(self.bag)
            self._bag_ready = True

    def _try_create(self, name: str, purpose: str, resumable: bool = False) -> Lock | None:
        lock = self._new_lock(name, purpose, resumable)
        for _ in range(2):
            try:
                self.chef.data_bags.create_item(self.bag, lock.item())
                return lock
            except Conflict:
                return None
            except NotFound:
                self._bag_ready = False
                self._ensure_bag()
        return None

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return self.chef.data_bags.get_item(self.bag, name)
        except NotFound:
            return None

    def _expired(self, item: dict[str, Any]) -> bool:
        expires = item.get("expires_at")
        if expires is None:  # a marker of an older release: {"id", "owner", "at"}
            expires = float(item.get("at", 0)) + self.lease
        return time.time() > float(expires) + self.clock_skew

    def _takeable(self, item: dict[str, Any]) -> bool:
        """Whether ``item`` may be taken over: its lease ended, or its holder is a dead process of this host."""
        return self._expired(item) or holder_dead(item)

    def _claim_marker(self, name: str, stale: dict[str, Any], depth: int = 0) -> Lock | None:
        """The takeover marker of ``stale``'s hold on ``name`` (None: another taker is at it).

        A marker whose own lease ended (its taker died) is taken over the same way.
        """
        marker = self._new_lock(f"{name}{TAKEOVER}{stale.get('token', 'none')}", f"take over {name}")
        try:
            self.chef.data_bags.create_item(self.bag, marker.item())
            return marker
        except Conflict:
            pass
        existing = self._read(marker.name)
        if existing is None or depth >= 3 or not self._takeable(existing):
            return None  # finished meanwhile, or someone else is taking it over right now
        inner = self._claim_marker(marker.name, existing, depth + 1)
        if inner is None:
            return None
        try:
            current = self._read(marker.name)
            if current is None or current.get("token") != existing.get("token"):
                return None
            self.chef.data_bags.update_item(self.bag, marker.item())
            log.info("took over the takeover marker %s left by %s", marker.name, existing.get("owner"))
            return marker
        finally:
            with contextlib.suppress(CrowbarError):
                self.chef.data_bags.delete_item(self.bag, inner.name)

    def _take_over(self, name: str, purpose: str, stale: dict[str, Any], *, sweep: bool = True,
                   resumable: bool = False) -> Lock | None:
        """Replace ``stale``'s hold on ``name`` by ours (None: released or taken meanwhile).

        The new hold stays resumable when the stale one was: a taker that dies
        before finishing or noting the dead one's work must not lose it.
        """
        marker = self._claim_marker(name, stale)
        if marker is None:
            return None
        try:
            current = self._read(name)
            if current is None or current.get("token") != stale.get("token"):
                return None  # released or already taken over meanwhile
            lock = self._new_lock(name, purpose, resumable or bool(stale.get("resumable")))
            lock.details = {"took_over_from": {k: stale.get(k) for k in ("owner", "purpose", "details")}}
            self.chef.data_bags.update_item(self.bag, lock.item())
            self.takeovers += 1
            self._taken_over.add(name)
            dead = holder_process(stale)
            what = "lock of a dead process," if holder_dead(stale) else "expired lock"
            if dead in self._reported:
                log.info("took over %s %s (%s)", what, name, describe(stale))
            else:
                self._reported.add(dead)
                log.warning("took over %s %s (%s); its other locks are taken over without "
                            "further messages", what, name, describe(stale))
        finally:
            with contextlib.suppress(CrowbarError):
                self.chef.data_bags.delete_item(self.bag, marker.name)
        if sweep:
            self._sweep(name, stale)
        return lock

    def _sweep(self, name: str, stale: dict[str, Any]) -> None:
        """After taking over ``name``: remove the dead holder's other expired locks (not the
        resumable ones) and every leftover takeover marker of ``name`` (best effort)."""
        dead = holder_process(stale)
        try:
            rows = list(self.chef.partial_search(self.bag, "*:*", _SWEEP_KEYS))
        except CrowbarError:
            return
        for row in rows:
            item_id = str(row.get("id") or "")
            try:
                if item_id.startswith(name + TAKEOVER):  # names a holder that is gone now
                    self.chef.data_bags.delete_item(self.bag, item_id)
                elif (item_id != name and TAKEOVER not in item_id and dead != self.owner
                      and holder_process(row) == dead and not row.get("resumable") and self._takeable(row)):
                    taken = self._take_over(item_id, f"clean up after {dead}", row, sweep=False)
                    if taken is not None:
                        self.chef.data_bags.delete_item(self.bag, item_id)
            except CrowbarError:
                continue

    def release(self, lock: Lock) -> None:
        """Release a lock (only if it is still ours)."""
        if lock.depth > 1:
            lock.depth -= 1
            return
        held = self._thread_held()
        if lock.name in held:
            held.remove(lock.name)
        self._release_unowned(lock)

    @contextlib.contextmanager
    def holding(self, names: Iterable[str], purpose: str, *, timeout: float | None = None) -> Iterator[list[Lock]]:
        """Hold several locks, taken one by one in the global order.

        Release order does not matter for deadlocks, so they are released
        together (in parallel), each only if still ours.
        """
        ordered = sorted(set(names), key=lock_order)
        taken: list[Lock] = []
        with self._releasing(lambda: self._release_all(taken), _some(ordered)):
            for name in ordered:
                taken.append(self.acquire(name, purpose, timeout=timeout))
            yield taken

    def _release_all(self, locks: list[Lock]) -> None:
        nested = [lock for lock in locks if lock.depth > 1]
        for lock in nested:
            self.release(lock)
        outer = [lock for lock in locks if lock.depth <= 1 and lock not in nested]
        held = self._thread_held()
        with self._mutex:  # no longer ours to renew, even if deleting them fails below
            for lock in outer:
                if self._held.get(lock.name) is lock:
                    del self._held[lock.name]
                if lock.name in held:
                    held.remove(lock.name)
        run_parallel(self._release_unowned, outer, workers=8, name="unlock", stop_on_error=False)

    def _release_unowned(self, lock: Lock) -> None:
        """Release a lock already removed from its thread's list."""
        with self._mutex:
            if self._held.get(lock.name) is lock:
                del self._held[lock.name]
        if lock.lost:
            return
        if time.time() > lock.expires_at - 1.0:
            current = self._read(lock.name)
            if current is None or current.get("token") != lock.token:
                log.warning("lock %s was taken over before release; leaving it", lock.name)
                return
        with contextlib.suppress(NotFound):
            self.chef.data_bags.delete_item(self.bag, lock.name)

    @contextlib.contextmanager
    def hold(self, name: str, purpose: str, *, timeout: float | None = None,
             resumable: bool = False) -> Iterator[Lock]:
        """Hold one lock for the duration of a ``with`` block (``resumable``: see :meth:`acquire`)."""
        lock = self.acquire(name, purpose, timeout=timeout, resumable=resumable)
        with self._releasing(lambda: self.release(lock), name):
            yield lock

    @contextlib.contextmanager
    def _releasing(self, release: Callable[[], None], what: str) -> Iterator[None]:
        """Release on the way out; if the block failed, a failed release is
        logged rather than hiding the block's own error (the lease runs out)."""
        try:
            yield
        except BaseException:
            try:
                release()
            except CrowbarError as exc:
                log.warning("could not release %s (the lease runs out by itself): %s", what, exc)
            raise
        release()

    # -- while holding -----------------------------------------------------------------

    def token_of(self, name: str) -> str | None:
        """The token of ``name`` when this thread holds it (None otherwise)."""
        if name not in self._thread_held():
            return None
        with self._mutex:
            lock = self._held.get(name)
        return None if lock is None or lock.lost else lock.token

    def ensure_valid(self, lock: Lock) -> None:
        """Raise unless the lease still protects us and no stop was requested (call before writing)."""
        stopping.check()
        if lock.lost or time.time() > lock.expires_at:
            lock.lost = True
            raise ConcurrencyError(
                f"lost lock {lock.name}: its {lock.lease:.0f}s lease ran out (the Chef server was "
                f"unreachable or this process stalled); nothing more was written, run the command again"
            )

    def update(self, lock: Lock, **details: Any) -> None:
        """Record progress in the lock item (also renews the lease)."""
        lock.details.update(details)
        self._renew(lock)

    def _renew(self, lock: Lock) -> None:
        if lock.lost:
            return
        new_expiry = time.time() + lock.lease
        if time.time() > lock.expires_at:
            current = self._read(lock.name)
            if current is None or current.get("token") != lock.token:
                lock.lost = True
                return
        previous = lock.expires_at
        lock.expires_at = new_expiry
        try:
            self.chef.data_bags.update_item(self.bag, lock.item())
        except CrowbarError:
            lock.expires_at = previous
            raise

    def _start_renewer(self) -> None:
        with self._mutex:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="lock-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        # Wake often and renew once a third of the lease has passed: two thirds
        # of it remain for the renewal to land, however busy the machine is.
        # Renewals run in a pool and the loop never waits for them, so one slow
        # request never delays the renewal of another lock.
        pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="renew")
        in_flight: set[str] = set()
        failed: list[tuple[str, CrowbarError]] = []
        guard = threading.Lock()

        def renew(lock: Lock) -> None:
            try:
                with self._mutex:
                    if self._held.get(lock.name) is not lock:
                        return  # released meanwhile
                try:
                    self._renew(lock)
                    with guard:
                        self.renewals += 1
                except NotFound:
                    with self._mutex:
                        released = self._held.get(lock.name) is not lock
                    if not released:  # deleted under us: we no longer hold it
                        lock.lost = True
                        log.warning("lock %s disappeared while held; the next write will stop", lock.name)
                except CrowbarError as exc:
                    with guard:
                        failed.append((lock.name, exc))
            finally:
                with guard:
                    in_flight.discard(lock.token)

        while True:
            time.sleep(min(1.0, max(0.05, self.lease / 12)))
            with guard:
                if failed:
                    log.warning("could not renew %s: %s", _some(sorted(n for n, _ in failed)), failed[0][1])
                    failed.clear()
            now = time.time()
            with self._mutex:
                due = [lock for lock in self._held.values() if now > lock.expires_at - lock.lease * 2 / 3]
            for lock in due:
                with guard:
                    if lock.token in in_flight:
                        continue
                    in_flight.add(lock.token)
                # How late past its renewal point (the margin left is two thirds of the lease minus this).
                self.renew_lateness = max(self.renew_lateness, now - (lock.expires_at - lock.lease * 2 / 3))
                pool.submit(renew, lock)

    # -- inspection ------------------------------------------------------------------------

    def inspect(self, name: str) -> dict[str, Any] | None:
        """The lock item, or None when nobody holds it."""
        return self._read(name)

    def all(self) -> list[dict[str, Any]]:
        """Every lock item on the server (takeover markers excluded)."""
        try:
            ids = self.chef.data_bags.items(self.bag)
        except NotFound:
            return []
        found = []
        for item_id in ids:
            if TAKEOVER in item_id:
                continue
            item = self._read(item_id)
            if item is not None:
                found.append(item)
        return found

    def expired(self, item: dict[str, Any]) -> bool:
        """Whether a lock item's lease has run out (beyond clock skew)."""
        return self._expired(item)

    def sweep(self) -> list[str]:
        """Remove every expired lock item and takeover marker (and those of dead processes of
        this host); the names removed.

        Each goes through the takeover protocol, so a live holder (one that
        renews its lease) never loses its lock, and a holder that stalled past
        its lease stops at its next write as after any takeover. A resumable
        item is first handed to ``on_abandoned`` (which may record, under that
        lock, that the work was interrupted).
        """
        try:
            ids = sorted(self.chef.data_bags.items(self.bag), key=lambda i: (i.count(TAKEOVER), i))
        except NotFound:
            return []
        removed = []
        for item_id in ids:
            item = self._read(item_id)
            if item is None or not self._takeable(item) or self._held_alive_here(item):
                continue
            try:
                taken = self._take_over(item_id, "sweep expired locks", item, sweep=False)
                if taken is None:
                    continue
                if taken.resumable and self.on_abandoned is not None:
                    self._abandoned(taken, item)
                with contextlib.suppress(NotFound):
                    self.chef.data_bags.delete_item(self.bag, item_id)
            except CrowbarError as exc:
                log.info("could not sweep lock %s: %s", item_id, exc)
                continue
            removed.append(item_id)
        return removed

    def _abandoned(self, taken: Lock, item: dict[str, Any]) -> None:
        """``on_abandoned`` with ``taken`` held by this thread (re-entrant for the callback)."""
        assert self.on_abandoned is not None
        held = self._thread_held()
        with self._mutex:
            self._held[taken.name] = taken
        held.append(taken.name)
        try:
            self.on_abandoned(taken.name, item)
        finally:
            held.remove(taken.name)
            with self._mutex:
                if self._held.get(taken.name) is taken:
                    del self._held[taken.name]


def _some(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 29 more``: lock names for a log line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
