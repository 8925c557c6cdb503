"""The audit trail: who changed what, when, and how it went.

Every operator action that changes the cluster (an edit, a commit and its
result, a revert, a deactivate or delete, a dequeue, an allocation, a
transition an operator asked for, a barclamp action such as ``bios apply``)
is one item of data bag ``crowbar_audit``::

    {"id": "20261202T043512123456Z-1f0c9a2b",      # time-sortable, unique
     "at": "2026-12-02T04:35:12Z", "action": "commit", "target": "nova/default",
     "proposal": "nova/default", "machines": [...], "revision": 4,
     "outcome": "applied", "by": {"client": "admin", "user": "ops", "host": "adm1"},
     "details": {"machines_written": 3}}

Each entry is an atomic create of a fresh item (no read-modify-write of a
shared document, so concurrent writers never lose each other's entries).
Entries hold names, revisions, counts and reasons, never a setting's value:
an edit records which keys changed, not what they hold.

Retention is bounded: the newest :data:`KEEP_ENTRIES` entries, none older
than :data:`KEEP_DAYS` days. A writer prunes on its first entry and on every
:data:`PRUNE_EVERY`-th after (one listing of the item names, then a delete
per entry past the bounds), so a CLI command prunes once.

Commands that change nothing (a dry run, a commit of what is applied or
still queued, an edit that changes nothing) and refusals (bad input, drift,
a lock held or a revision changed by someone else: :data:`REFUSALS`) leave
no entry; an operation that fails part way is recorded ``failed: <error>``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import os
import re
import secrets as random_source
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import (
    CrowbarError,
    DriftError,
    LockTimeout,
    NotFound,
    NotFoundError,
    RevisionConflict,
    ValidationError,
)
from barclamp_sdk.model.naming import AUDIT_BAG
from barclamp_sdk.model.parallel import run_parallel

log = logging.getLogger(__name__)

#: Entries kept at most (the oldest beyond are pruned).
KEEP_ENTRIES = 5000
#: Entries older than this many days are pruned.
KEEP_DAYS = 400
#: A writer prunes on its first entry and every PRUNE_EVERY-th after.
PRUNE_EVERY = 100
#: Errors that refuse an operation before it writes anything (bad input, hand-edited roles,
#: a lock held or a revision changed by someone else): they leave no entry.
REFUSALS = (ValidationError, NotFoundError, DriftError, LockTimeout, RevisionConflict)
_ID_TIME = "%Y%m%dT%H%M%S%fZ"
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: Machine names kept in one entry (a commit of more names the first ones and ``machines_total``).
MACHINES_KEPT = 2000

class Recorder(Protocol):
    """What services are handed to record an entry (``AuditTrail.record``)."""

    def __call__(self, action: str, target: str, outcome: str = "ok",
                 details: Mapping[str, Any] | None = None, *, proposal: str | None = None,
                 machines: Iterable[str] = (), revision: int | None = None) -> object: ...


@dataclass
class Caller:
    """Who acts: the Chef client name, the OS user and the host."""

    client: str
    user: str = field(default_factory=lambda: _os_user())
    host: str = field(default_factory=socket.gethostname)

    def as_dict(self) -> dict[str, str]:
        return {"client": self.client, "user": self.user, "host": self.host}


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: an ISO 8601 time (UTC unless it says) or a duration back from now (``30m``, ``2h``, ``7d``)."""
    value = text.strip()
    now = now or dt.datetime.now(dt.timezone.utc)
    if _DURATION.fullmatch(value) or (value and all(_DURATION.fullmatch(p) for p in value.split())):
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(value))
        return now - dt.timedelta(seconds=seconds)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"--since {text!r} is neither a time (2026-12-02T04:00:00Z, 2026-12-02) "
                              "nor a duration (30m, 2h, 7d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _id_prefix(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime(_ID_TIME)


class AuditTrail:
    """Records and reads audit entries (data bag ``crowbar_audit``)."""

    def __init__(self, chef: ChefClient, caller: Caller | None = None, *, keep: int = KEEP_ENTRIES,
                 keep_days: float = KEEP_DAYS, prune_every: int = PRUNE_EVERY, readers: int = 8) -> None:
        self.chef = chef
        self.caller = caller or Caller(str(chef.config.client_name or "unknown"))
        self.keep = keep
        self.keep_days = keep_days
        self.prune_every = prune_every
        #: Entries read at a time by :meth:`entries`.
        self.readers = readers
        self._guard = threading.Lock()
        self._last = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        self._written = 0

    # -- writing ----------------------------------------------------------------------------

    def record(self, action: str, target: str, outcome: str = "ok", details: Mapping[str, Any] | None = None,
               *, proposal: str | None = None, machines: Iterable[str] = (),
               revision: int | None = None) -> dict[str, Any] | None:
        """Record one entry; returns it (None if it could not be stored: that is logged, never raised).

        ``details`` holds names, counts and reasons only, never a setting's value.
        """
        with self._guard:  # ids strictly increase within a process: its entries keep their order
            moment = max(dt.datetime.now(dt.timezone.utc), self._last + dt.timedelta(microseconds=1))
            self._last = moment
            self._written += 1
            prune = self._written == 1 or self._written % self.prune_every == 0
        names = sorted(set(machines))
        entry: dict[str, Any] = {
            "id": f"{_id_prefix(moment)}-{random_source.token_hex(4)}",
            "at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": action, "target": target, "outcome": outcome,
            "proposal": proposal, "machines": names[:MACHINES_KEPT], "revision": revision,
            "by": self.caller.as_dict(), "details": _plain(dict(details or {})),
        }
        if len(names) > MACHINES_KEPT:  # an entry stays far below the server's request limit
            entry["machines_total"] = len(names)
        try:
            try:
                self.chef.data_bags.create_item(AUDIT_BAG, entry)
            except NotFound:
                self.chef.data_bags.ensure(AUDIT_BAG)
                self.chef.data_bags.create_item(AUDIT_BAG, entry)
        except CrowbarError as exc:  # the operation itself is done; say so rather than fail it
            log.warning("could not record %s of %s in the audit trail: %s", action, target, exc)
            return None
        if prune:
            self.prune()
        return entry

    def prune(self) -> list[str]:
        """Delete entries past the retention bounds; returns their ids (best effort, never raises)."""
        try:
            names = self.chef.data_bags.items(AUDIT_BAG)
        except CrowbarError:
            return []
        cutoff = _id_prefix(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=self.keep_days))
        excess = max(0, len(names) - self.keep)
        doomed = [n for i, n in enumerate(names) if i < excess or n < cutoff]
        for name in doomed:
            try:
                self.chef.data_bags.delete_item(AUDIT_BAG, name)
            except NotFound:
                pass
            except CrowbarError as exc:
                log.warning("could not prune audit entry %s: %s", name, exc)
                break
        return doomed

    # -- reading ----------------------------------------------------------------------------

    def entries(self, *, since: dt.datetime | str | None = None, proposal: str | None = None,
                machine: str | None = None, action: str | None = None, limit: int | None = 200,
                ) -> list[dict[str, Any]]:
        """Entries, oldest first: the newest ``limit`` (None: all) that match every filter given.

        ``since`` is a datetime or text :func:`parse_since` reads; ``proposal``
        is ``barclamp/name``; ``machine`` a machine name (entries naming it as
        target or among their machines).
        """
        if isinstance(since, str):
            since = parse_since(since)
        if proposal is not None and proposal.count("/") != 1:
            raise ValidationError(f"a proposal is BARCLAMP/NAME (like nova/default), not {proposal!r}")
        try:
            names = self.chef.data_bags.items(AUDIT_BAG)
        except NotFound:
            return []
        if since is not None:
            start = _id_prefix(since)
            names = [n for n in names if n >= start]
        # One search of the bag (paged), plus direct reads of the listed entries it has not
        # indexed yet (search lags writes on production servers).
        listed = set(names)
        found: dict[str, dict[str, Any]] = {}
        for row in self.chef.search(AUDIT_BAG, "*:*"):
            data = row.get("raw_data", row)
            if str(data.get("id", "")) in listed:
                found[str(data["id"])] = data
        for item in self._read(sorted(listed - set(found))):
            if item is not None:
                found[str(item["id"])] = item
        matching = [found[n] for n in sorted(found) if _matches(found[n], proposal, machine, action)]
        return matching[-limit:] if limit is not None else matching

    def _read(self, names: list[str]) -> list[dict[str, Any] | None]:
        """Entries by id, ``readers`` at a time (None for one pruned meanwhile)."""
        return run_parallel(lambda n: self.chef.data_bags.find_item(AUDIT_BAG, n), names,
                            workers=self.readers, name="audit-reader")


def _matches(entry: Mapping[str, Any], proposal: str | None, machine: str | None, action: str | None) -> bool:
    if proposal is not None and proposal not in (entry.get("proposal"), entry.get("target")):
        return False
    if machine is not None and machine != entry.get("target") and machine not in (entry.get("machines") or []):
        return False
    return action is None or entry.get("action") == action


def _plain(value: Any) -> Any:
    """``details`` as JSON: long strings cut, secret references shown as where they point."""
    if isinstance(value, dict):
        if set(value) == {"data_bag", "item", "key"}:
            return f"<secret {value.get('key')}>"
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) > 500:
        return value[:500] + "..."
    return value


@contextlib.contextmanager
def recording(record: Recorder | None, action: str, target: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Record ``action`` through ``record`` once the block ends: with its outcome
    (``entry["outcome"]``, "ok" by default), or ``failed: <error>`` when it raises
    anything but a refusal (:data:`REFUSALS`: no entry).

    The block may fill ``entry["details"]``, ``"revision"``, ``"machines"``,
    ``"proposal"``, or set ``entry["skip"]`` when it changed nothing (no entry).
    """
    entry: dict[str, Any] = {"outcome": "ok", "details": {}, **fields}
    try:
        yield entry
    except REFUSALS:
        raise
    except Exception as exc:
        entry["outcome"] = f"failed: {type(exc).__name__}: {exc}"[:500]
        _record_entry(record, action, target, entry)
        raise
    if not entry.get("skip"):
        _record_entry(record, action, target, entry)


def _record_entry(record: Recorder | None, action: str, target: str, entry: Mapping[str, Any]) -> None:
    if record is None:
        return
    record(action, target, str(entry.get("outcome", "ok")), entry.get("details"),
           proposal=entry.get("proposal"), machines=entry.get("machines") or (), revision=entry.get("revision"))
