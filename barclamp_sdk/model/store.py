"""Proposal persistence: the ``crowbar`` data bag and every revision.

The current document of proposal ``nova/default`` is item ``bc-nova-default``
of data bag ``crowbar`` (Crowbar's place for it). Every saved revision is also
kept, whole, as item ``nova-default-<revision>`` of ``crowbar_history`` with
who saved it, when, and a one-line summary of the change. Either is stored
through :mod:`~barclamp_sdk.model.parts`: a container too large for one
request (a per-machine map of thousands of machines) is kept in parts, and
every read gives the whole document back.

Every write of a proposal document happens under the proposal's lock, from
a document read under that same lock: :meth:`ProposalStore.modify` is the one
read-modify-write path (the lifecycle, the queue and the committer use it),
and the store refuses a write whose input was read without the lock
(``Proposal.read_under``), so no command can write back a stale copy.
Revisions only go forward: an edit based on an old revision fails with
:class:`~barclamp_sdk.errors.RevisionConflict`, and the history item of a
revision that became current is never overwritten.
"""

from __future__ import annotations

import copy
import getpass
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import (
    ConcurrencyError,
    Conflict,
    CrowbarError,
    NotFound,
    NotFoundError,
    RevisionConflict,
    ValidationError,
)
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import (
    HISTORY_BAG,
    PROPOSALS_BAG,
    barclamp_of_item,
    config_role_name,
    history_item_id,
    proposal_item_id,
    proposal_lock_name,
    proposal_name_of,
)
from barclamp_sdk.model.noderoles import FINGERPRINT
from barclamp_sdk.model.parts import PartStore, references, split
from barclamp_sdk.model.proposal import STATUS_KEYS, Proposal
from barclamp_sdk.model.registry import BarclampRegistry

log = logging.getLogger(__name__)

_UNREAD = object()

HISTORY_KEYS = {
    "id": ["id"], "barclamp": ["barclamp"], "proposal": ["proposal"], "revision": ["revision"],
    "saved_at": ["saved_at"], "saved_by": ["saved_by"], "change": ["change"],
}


def who() -> str:
    """``user@host`` of this process, for the history."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class ProposalStore:
    """Reads and writes proposal documents and their history."""

    def __init__(self, chef: ChefClient, registry: BarclampRegistry, locks: LockManager,
                 parts: PartStore | None = None) -> None:
        self.chef = chef
        self.registry = registry
        self.locks = locks
        self.parts = parts or PartStore(chef)
        self._bags_ready = False
        #: Per proposal item id: parts known to exist (named by the head last read or written).
        self._seen: dict[str, set[str]] = {}

    def _whole(self, data: dict[str, Any]) -> dict[str, Any]:
        """A stored proposal head (or history item) with its parts joined back."""
        owner = str(data.get("proposal") or data.get("id") or "")
        refs = references(data)
        if refs:
            self._seen[owner] = self._seen.get(owner, set()) | refs
        return self.parts.join(data)  # type: ignore[no-any-return]

    def _stored(self, owner: str, data: dict[str, Any]) -> dict[str, Any]:
        """What to send for ``data``: its parts are written first, the head returned."""
        head, parts = split(data, owner)
        seen = self._seen.setdefault(owner, set())
        self.parts.write(parts, seen)
        seen.update(parts)
        return head

    def write_parts(self, owner: str, parts: dict[str, dict[str, Any]]) -> None:
        """Write the parts of a document of proposal item ``owner`` not known to exist (a config role's)."""
        seen = self._seen.setdefault(owner, set())
        self.parts.write(parts, seen)
        seen.update(parts)

    def _ensure_bags(self) -> None:
        if not self._bags_ready:
            self.chef.data_bags.ensure(PROPOSALS_BAG)
            self.chef.data_bags.ensure(HISTORY_BAG)
            self._bags_ready = True

    def find(self, barclamp: str, name: str) -> Proposal | None:
        definition = self.registry.get(barclamp)
        try:
            data = self.chef.data_bags.get_item(PROPOSALS_BAG, proposal_item_id(barclamp, name))
        except NotFound:
            return None
        self._seen[str(data.get("id"))] = references(data)
        proposal = Proposal(definition, self._whole(data))
        proposal.read_under = self.locks.token_of(proposal_lock_name(barclamp, name))
        return proposal

    def get(self, barclamp: str, name: str) -> Proposal:
        proposal = self.find(barclamp, name)
        if proposal is None:
            raise NotFoundError(
                f"no proposal {barclamp}/{name}; create it with "
                f"`crowbar {barclamp} proposal create {name}`"
            )
        return proposal

    def documents(self, barclamp: str | None = None) -> list[Proposal]:
        """Every proposal (of one barclamp, or of all known barclamps).

        Each listed item is read directly: search lags behind writes, and a
        row it returns may hold an older revision of a proposal, not only
        miss a new one (an export, a claim check or a dependents walk must
        never act on a stale copy).
        """
        try:
            listed = sorted(i for i in self.chef.data_bags.items(PROPOSALS_BAG) if self._wanted(i, barclamp))
        except NotFound:
            return []
        found: dict[str, dict[str, Any]] = {}
        for item_id in listed:
            item = self.chef.data_bags.find_item(PROPOSALS_BAG, item_id)
            if item is not None:
                found[item_id] = self._whole(item)
        proposals = [Proposal(self.registry.get(barclamp_of_item(i) or ""), data) for i, data in found.items()]
        return sorted(proposals, key=lambda p: (p.barclamp, p.name))

    def _wanted(self, item_id: str, barclamp: str | None) -> bool:
        bc = barclamp_of_item(item_id)
        return bc is not None and bc in self.registry and (barclamp is None or bc == barclamp)

    def create(self, proposal: Proposal, *, change: str) -> Proposal:
        """Store revision 1 of a new proposal (ValidationError if it exists)."""
        self._ensure_bags()
        self._require_lock(proposal)
        if self.find(proposal.barclamp, proposal.name) is not None:  # under the lock: history 1 is theirs
            raise ValidationError(
                f"proposal {proposal.barclamp}/{proposal.name} already exists; edit it, or delete it first")
        proposal.revision = 1
        self._seen[proposal.id] = set()
        self._record(proposal, change, current_revision=0)
        try:
            self.chef.data_bags.create_item(PROPOSALS_BAG, self._stored(proposal.id, proposal.data))
        except Conflict:
            raise ValidationError(
                f"proposal {proposal.barclamp}/{proposal.name} already exists; edit it, or "
                "delete it first"
            ) from None
        return proposal

    def save(self, proposal: Proposal, *, expected_revision: int, change: str) -> Proposal:
        """Store a new revision; RevisionConflict if someone saved since (call under the proposal lock)."""
        self._require_lock(proposal)
        current = self.get(proposal.barclamp, proposal.name)
        if current.revision != expected_revision:
            raise RevisionConflict(
                f"proposal {proposal.barclamp}/{proposal.name} changed since you read it "
                f"(revision {expected_revision} -> {current.revision}); re-read it and edit again"
            )
        proposal.revision = expected_revision + 1
        self._record(proposal, change, current_revision=current.revision)
        self.chef.data_bags.update_item(PROPOSALS_BAG, self._stored(proposal.id, proposal.data))
        proposal.read_under = current.read_under
        return proposal

    def modify(self, barclamp: str, name: str, change: Callable[[Proposal], object], *,
               purpose: str) -> Proposal:
        """The one read-modify-write of a document's bookkeeping: under the proposal lock,
        read it, apply ``change`` to a copy, and store it (no write when nothing changed).

        ``change`` returning False also means "write nothing". Re-entrant: a
        caller already holding the lock (a commit) reads and writes under it.
        """
        with self.locks.hold(proposal_lock_name(barclamp, name), purpose):
            current = self.get(barclamp, name)
            edited = current.copy()
            if change(edited) is False or edited.data == current.data:
                return current
            self.write_status(edited)
            return edited

    def write_status(self, proposal: Proposal) -> None:
        """Store bookkeeping changes (status keys) without a new revision.

        ``proposal`` must have been read under the proposal lock this thread
        still holds (use :meth:`modify`); anything else could write back a
        stale copy over an edit saved meanwhile.
        """
        token = self._require_lock(proposal)
        if proposal.read_under != token:
            raise ConcurrencyError(
                f"refusing to write proposal {proposal.barclamp}/{proposal.name}: it was read without "
                "holding its lock (a bug: read-modify-write it with ProposalStore.modify)")
        self.chef.data_bags.update_item(PROPOSALS_BAG, self._stored(proposal.id, proposal.data))

    def _require_lock(self, proposal: Proposal) -> str:
        """This thread's token of the proposal lock (ConcurrencyError if it does not hold it)."""
        token = self.locks.token_of(proposal_lock_name(proposal.barclamp, proposal.name))
        if token is None:
            raise ConcurrencyError(
                f"refusing to write proposal {proposal.barclamp}/{proposal.name} without holding its "
                "lock (a bug, or the lock was lost: run the command again)")
        return token

    def record_status(self, proposal: Proposal, *, failed: str | None = None,
                      interrupted: str | None = None) -> None:
        """Record the outcome of a commit (success, failed and why, or interrupted and how far
        it got); no write if unchanged.

        A failure to record is logged, never raised: the commit's own outcome
        (or error) is what the caller reports.
        """
        deployment = proposal.deployment
        before = {k: deployment.get(k) for k in STATUS_KEYS}
        if interrupted:
            deployment["crowbar-status"] = "interrupted"
            deployment["crowbar-failed"] = interrupted
        elif failed:
            deployment["crowbar-status"] = "failed"
            deployment["crowbar-failed"] = failed
        else:
            deployment["crowbar-status"] = "success"
            deployment.pop("crowbar-failed", None)
            deployment.pop("crowbar-rollout", None)  # a rollout records its waves after this
        proposal.queued = False
        if {k: deployment.get(k) for k in STATUS_KEYS} != before:
            try:
                self.write_status(proposal)
            except CrowbarError as exc:
                log.warning("could not record the status of %s: %s", proposal.ref, exc)

    def _record(self, proposal: Proposal, change: str, *, current_revision: int) -> None:
        """Keep ``proposal`` as its revision's history item; ``current_revision`` was read under the lock."""
        item = {
            "id": history_item_id(proposal.barclamp, proposal.name, proposal.revision),
            "barclamp": proposal.barclamp,
            "proposal": proposal.id,
            "revision": proposal.revision,
            "saved_at": now_iso(),
            "saved_by": who(),
            "change": change,
            "document": proposal.data,
        }
        item = self._stored(proposal.id, item)
        try:
            self.chef.data_bags.create_item(HISTORY_BAG, item)
        except Conflict:
            if current_revision >= proposal.revision:  # that revision became current: never overwritten
                raise RevisionConflict(
                    f"proposal {proposal.barclamp}/{proposal.name} already has revision "
                    f"{proposal.revision}; re-read it and edit again") from None
            # Left by a writer that died before updating the proposal itself:
            # that revision never became current, so it is replaced.
            self.chef.data_bags.update_item(HISTORY_BAG, item)

    def delete(self, proposal: Proposal) -> None:
        """Delete a proposal and its history (under the proposal lock)."""
        self._require_lock(proposal)
        for revision in range(1, proposal.revision + 1):
            try:
                self.chef.data_bags.delete_item(
                    HISTORY_BAG, history_item_id(proposal.barclamp, proposal.name, revision))
            except NotFound:
                pass
        self.chef.data_bags.delete_item(PROPOSALS_BAG, proposal.id)
        self.parts.delete_owner(proposal.id)
        self._seen.pop(proposal.id, None)

    def history(self, barclamp: str, name: str, upto: int = 0) -> list[dict[str, Any]]:
        """One summary per saved revision, oldest first.

        Found by search; revisions up to ``upto`` (the current one) that
        search has not indexed yet are read directly.
        """
        query = f"proposal:{proposal_item_id(barclamp, name)}"
        try:
            rows = [r for r in self.chef.partial_search(HISTORY_BAG, query, HISTORY_KEYS) if r.get("revision")]
        except NotFound:
            rows = []
        seen = {int(r["revision"]) for r in rows}
        for revision in range(1, upto + 1):
            if revision not in seen:
                item = self.chef.data_bags.find_item(HISTORY_BAG, history_item_id(barclamp, name, revision))
                if item is not None:
                    rows.append({key: item.get(path[0]) for key, path in HISTORY_KEYS.items()})
        return sorted(rows, key=lambda r: int(r["revision"]))

    def revision(self, barclamp: str, name: str, revision: int) -> Proposal:
        """The proposal as it was at ``revision``."""
        definition = self.registry.get(barclamp)
        try:
            item = self.chef.data_bags.get_item(HISTORY_BAG, history_item_id(barclamp, name, revision))
        except NotFound:
            raise NotFoundError(
                f"proposal {barclamp}/{name} has no revision {revision}; see "
                f"`crowbar {barclamp} proposal history {name}`"
            ) from None
        return Proposal(definition, self._whole(item)["document"])

    # -- what is committed ------------------------------------------------------------

    def config_role(self, barclamp: str, name: str) -> dict[str, Any] | None:
        """The config role of a committed proposal (None when it is not committed)."""
        return self.chef.roles.find(config_role_name(barclamp, name))

    def applied(self, barclamp: str, name: str,
                role: dict[str, Any] | None | object = _UNREAD) -> tuple[Proposal | None, dict[str, Any] | None]:
        """The revision last committed and the config role that records it.

        The revision comes from history; if history lost it, the proposal is
        rebuilt from what the config role holds. ``role`` is the config role
        when the caller has read it already (None: there is none).
        """
        if role is _UNREAD:
            role = self.config_role(barclamp, name)
        if not isinstance(role, dict):
            return None, None
        deployment = copy.deepcopy((role.get("override_attributes") or {}).get(barclamp, {}))
        try:
            revision = int(deployment.get("crowbar-revision") or 0)
        except (TypeError, ValueError):
            revision = 0
        if revision:
            try:
                return self.revision(barclamp, name, revision), role
            except CrowbarError:
                pass  # history lost: rebuild what the role holds
        whole = self.parts.join(role)  # the role itself is returned as stored (its fingerprint is of that)
        deployment = copy.deepcopy((whole.get("override_attributes") or {}).get(barclamp, {}))
        deployment.pop(FINGERPRINT, None)
        data = {"id": proposal_item_id(barclamp, name),
                "attributes": {barclamp: copy.deepcopy((whole.get("default_attributes") or {}).get(barclamp, {}))},
                "deployment": {barclamp: deployment}}
        return Proposal(self.registry.get(barclamp), data), role

    def is_committed(self, proposal: Proposal) -> bool:
        """Whether ``proposal`` has been committed (its config role exists)."""
        return self.config_role(proposal.barclamp, proposal.name) is not None

    def committed(self, barclamp: str) -> list[Proposal]:
        """Proposals of ``barclamp`` that have been committed (current documents).

        From the proposal bag's item list and each one's config role: a few
        requests whatever the cluster's size (a role search would scan every
        machine's role on some servers, and this runs on machine transitions).
        """
        try:
            ids = [i for i in self.chef.data_bags.items(PROPOSALS_BAG) if barclamp_of_item(i) == barclamp]
        except NotFound:
            return []
        found = []
        for item_id in ids:
            name = proposal_name_of(barclamp, item_id)
            if self.config_role(barclamp, name) is None:
                continue
            proposal = self.find(barclamp, name)
            if proposal is not None:
                found.append(proposal)
        return found
