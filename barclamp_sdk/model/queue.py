"""The proposal queue: commits that wait, and why.

Item ``queue`` of data bag ``crowbar`` (Crowbar's shape, plus the reasons)::

    {"id": "queue", "proposal_queue": [
        {"barclamp": "nova", "inst": "default", "revision": 4,
         "queued_at": "...", "reasons": ["depends on ceph/default, which is not applied yet: commit it"],
         "deps": [{"barclamp": "ceph", "inst": "default"}],
         "elements": {"d52-...": ["nova-multi-compute-kvm"]}}]}

A queued proposal marks its machines allocated, with the proposal pending on
them (so paused machines proceed to install). The queue is processed again
whenever a machine reaches ``ready`` and whenever a proposal is applied; an
item stays only while something still blocks it, and its reasons are kept
current, so nothing waits "for no obvious reason". A queue past 100,000
bytes (the per-machine ``elements`` of a proposal for thousands of machines)
is stored through :mod:`~barclamp_sdk.model.parts`; parts the queue no longer
names are deleted under the queue lock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.result import CommitResult
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import PROPOSALS_BAG, QUEUE_ITEM, proposal_lock_name
from barclamp_sdk.model.noderoles import NodeRoleStore, crowbar_data
from barclamp_sdk.model.parts import references, split
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.spec import ProposalRef
from barclamp_sdk.model.store import ProposalStore


class Queue:
    """Queued commits: list, explain, add, remove (the lifecycle processes them)."""

    def __init__(self, chef: ChefClient, locks: LockManager, store: ProposalStore, roles: NodeRoleStore,
                 reader: ClusterReader, gate: Gate, services: HookServices) -> None:
        self.chef = chef
        self.locks = locks
        self.store = store
        self.roles = roles
        self.reader = reader
        self.gate = gate
        self.services = services

    def _read(self) -> tuple[dict[str, Any], set[str]]:
        """The queue item, whole, and the parts its stored head names (NotFound if there is none)."""
        for attempt in range(3):
            item = self.chef.data_bags.get_item(PROPOSALS_BAG, QUEUE_ITEM)
            refs = references(item)
            try:
                return self.store.parts.join(item), refs
            except CrowbarError:  # a part replaced meanwhile (read without the lock): read again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def items(self) -> list[dict[str, Any]]:
        """The queued proposals, oldest first."""
        try:
            item = self._read()[0]
        except NotFound:
            return []
        return [_normalized(e) for e in item.get("proposal_queue") or [] if isinstance(e, dict)]

    def contains(self, ref: ProposalRef, items: list[dict[str, Any]] | None = None) -> bool:
        """Whether ``ref`` has an item in the queue (of ``items`` when already read)."""
        return any(_is(entry, ref) for entry in (self.items() if items is None else items))

    def _write(self, entries: list[dict[str, Any]], existed: bool, stored: Collection[str] = ()) -> None:
        body, parts = split({"id": QUEUE_ITEM, "proposal_queue": entries}, QUEUE_ITEM)
        self.store.parts.write(parts, stored)
        if existed:
            self.chef.data_bags.update_item(PROPOSALS_BAG, body)
        else:
            self.chef.data_bags.ensure(PROPOSALS_BAG)
            self.chef.data_bags.create_item(PROPOSALS_BAG, body)
        self.store.parts.delete(sorted(set(stored) - set(parts)))

    def _modify(self, change: Any, purpose: str) -> bool:
        """Read-modify-write the queue item under the queue lock."""
        with self.locks.hold("queue", purpose):
            stored: set[str] = set()
            try:
                item, stored = self._read()
                existed = True
            except NotFound:
                item, existed = {"id": QUEUE_ITEM, "proposal_queue": []}, False
            entries = [_normalized(e) for e in item.get("proposal_queue") or [] if isinstance(e, dict)]
            updated = change(entries)
            if updated is None or updated == entries:
                return False
            self._write(updated, existed, stored)
            return True

    def enqueue(self, proposal: Proposal, reasons: list[str]) -> CommitResult:
        """Queue a blocked commit, marking its machines pending.

        Idempotent: when the proposal is already queued at this revision and
        its machines are marked, nothing is written (the queue is looked at
        each time a machine becomes ready). ``crowbar queue`` shows fresh
        reasons; the stored ones are those of the last change.
        """
        ref = proposal.ref
        definition = proposal.definition
        deps = [{"barclamp": d.barclamp, "inst": d.name}
                for d in definition.all_dependencies(proposal, self.services.context(definition))]
        elements = proposal.elements_by_node()
        entry = {"barclamp": ref.barclamp, "inst": ref.name, "revision": proposal.revision,
                 "reasons": reasons, "deps": deps, "elements": elements}

        def same(existing: dict[str, Any]) -> bool:
            return all(existing.get(k) == entry[k] for k in ("revision", "deps", "elements"))

        def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for index, existing in enumerate(entries):
                if _is(existing, ref):
                    if same(existing):
                        return entries
                    merged = {**entry, "queued_at": existing.get("queued_at", now_iso())}
                    return [*entries[:index], merged, *entries[index + 1:]]
            return [*entries, {**entry, "queued_at": now_iso()}]

        queued = any(_is(i, ref) and same(i) for i in self.items())
        todo = self._pending_marks(proposal)
        if queued and not todo and proposal.queued:
            return CommitResult(ref, proposal.revision, "queued", reasons=reasons, already_queued=True)
        with self.locks.hold(proposal_lock_name(ref.barclamp, ref.name), f"queue {ref}"):
            self._modify(change, f"queue {ref}")
            if todo:
                self.roles.update(todo, purpose=f"queue {ref}")
            self.store.modify(ref.barclamp, ref.name, _mark_queued(True), purpose=f"queue {ref}")
        return CommitResult(ref, proposal.revision, "queued", reasons=reasons, already_queued=queued)

    def _pending_marks(self, proposal: Proposal) -> dict[str, Any]:
        """Mutations marking machines allocated with the proposal pending."""
        key = proposal.ref.key
        held = proposal.elements_by_node()

        def mutation(node: str) -> Any:
            elements = held.get(node, [])

            def mark(role: dict[str, Any]) -> bool:
                data = crowbar_data(role)
                pending = data.setdefault("pending", {})
                changed = pending.get(key) != elements or not data.get("allocated")
                pending[key] = elements
                data["allocated"] = True
                return changed

            return mark

        cluster = self.reader.view(proposal.nodes())
        todo = {}
        for node in proposal.nodes():
            record = cluster.get(node)
            if record is None:
                continue
            if record.pending.get(key) != tuple(held.get(node, [])) or not record.allocated:
                todo[node] = mutation(node)
        return todo

    def remove(self, ref: ProposalRef) -> bool:
        """Take a proposal out of the queue (no write if it was not queued)."""
        if not self.contains(ref):
            return False

        def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [e for e in entries if not _is(e, ref)]

        return self._modify(change, f"dequeue {ref}")

    def dequeue(self, barclamp: str, name: str) -> None:
        """Operator action: stop waiting; clear the machines' pending marks."""
        ref = ProposalRef(barclamp, name)
        with self.locks.hold(proposal_lock_name(barclamp, name), f"dequeue {ref}"):
            proposal = self.store.get(barclamp, name)
            items = self.items()
            if not self.remove(ref) and not proposal.queued:
                raise NotFoundError(f"proposal {ref} is not queued")
            key = ref.key

            def clear(role: dict[str, Any]) -> bool:
                return crowbar_data(role).get("pending", {}).pop(key, None) is not None

            # Search may lag: the machines the queue item and the document name are always looked at.
            marked = {r.name for r in self.reader.view() if key in r.pending}
            marked |= set(proposal.nodes()) | {n for i in items if _is(i, ref) for n in i.get("elements") or {}}
            todo = {name: clear for name in sorted(marked)}
            if todo:
                self.roles.update(todo, purpose=f"dequeue {ref}")
            self.store.modify(barclamp, name, _mark_queued(False), purpose=f"dequeue {ref}")

    def explain(self) -> list[dict[str, Any]]:
        """Each queued proposal with fresh reasons (reads only), oldest first.

        Each item is a dict with the keys ``barclamp`` and ``inst`` (the
        proposal's barclamp and name), ``revision`` (the revision queued),
        ``queued_at`` (ISO 8601 time), ``reasons`` (what still blocks it, as
        sentences; recomputed now), ``deps`` (the proposals it depends on, each
        ``{"barclamp", "inst"}``) and ``elements`` (machine -> elements it will get).
        """
        explained = []
        for item in self.items():
            entry = dict(item)
            try:
                proposal = self.store.get(item["barclamp"], item["inst"])
                entry["reasons"] = self.gate.blockers(proposal, self.reader.view(proposal.nodes())) or [
                    "nothing blocks it any more: it will be applied when the queue is next processed"]
            except CrowbarError as exc:
                entry["reasons"] = [f"cannot be evaluated: {exc}"]
            explained.append(entry)
        return explained


def _mark_queued(queued: bool) -> Callable[[Proposal], bool]:
    """A :meth:`ProposalStore.modify` change setting the document's queued mark."""
    def change(proposal: Proposal) -> bool:
        if proposal.queued == queued:
            return False
        proposal.queued = queued
        return True
    return change


def _is(entry: dict[str, Any], ref: ProposalRef) -> bool:
    return entry.get("barclamp") == ref.barclamp and entry.get("inst") == ref.name


def _normalized(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with its lists and maps present (goiardi stores an empty list
    nested in a list as null)."""
    return {**entry, "deps": list(entry.get("deps") or []), "reasons": list(entry.get("reasons") or []),
            "elements": {k: list(v or []) for k, v in (entry.get("elements") or {}).items()}}
