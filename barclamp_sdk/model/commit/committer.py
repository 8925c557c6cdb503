"""Committing a proposal: from document to Chef roles.

What a commit does, and what it reads and writes, depends on how much changed
since the revision last applied (recorded in the ``<bc>-config-<name>`` role):

* Checks that need no lock come first (document shape, settings, element
  counts, machines that exist), so bad input writes nothing at all.
* A new proposal, or one that changed on many machines: the shard locks of
  every machine involved are taken (one lock item per shard, never per
  machine), the proposal is validated against a search snapshot taken under
  those locks, and each role is read once from its object endpoint and,
  when it matches the snapshot, changed and written at once, batch by batch
  in ``element_order``. That is the least a commit can do: one read and at
  most one write per machine. A role that does not match (search lagging)
  sends the commit to the careful path: read every role, validate against
  them, write; if they refuse the commit, what was written is put back.
* A small change, or the same proposal again: one paged partial search says
  which machines differ from what the proposal wants (or were edited by hand);
  only those are locked, re-read and written. An unchanged proposal writes
  nothing and takes no lock.
* Something blocks it (a dependency not applied, a machine not ready): it is
  queued with the reasons (see :mod:`barclamp_sdk.model.queue`).

The config role is written before any machine role (a node must never name
a role that does not exist). Progress is recorded in the proposal's lock
item, so an interrupted commit shows as such; committing again finishes the
job. A dry run reads what a commit would read and reports the exact role
changes, writing nothing.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from barclamp_sdk.model.barclamp import Barclamp, ProposalRef
from barclamp_sdk.model.cluster import ClusterView, Entry, MachineRecord, record_from_role
from barclamp_sdk.model.hooks import Context
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.errors import CrowbarError, DriftError, NotFound, ValidationError
from barclamp_sdk.model.jsondoc import canonical_json, diff, fingerprint
from barclamp_sdk.model.naming import NODE_ROLE_PREFIX, node_role_name, proposal_lock_name
from barclamp_sdk.model.noderoles import (
    DRIFT,
    FINGERPRINT,
    active_run_list,
    crowbar_data,
    drifted,
)
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.validation import check_attributes, check_elements, check_shape, validate

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar

log = logging.getLogger(__name__)

STATUS_KEYS = ("crowbar-status", "crowbar-failed", "crowbar-queued")
#: Changed on at most this share of its machines, a commit plans by search.
SMALL_CHANGE = 0.3


@dataclass
class RoleChange:
    """What a commit does (or would do) to one role."""

    role: str
    action: str  # create | update
    node: str | None = None
    run_list_before: list[str] = field(default_factory=list)
    run_list_after: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


@dataclass
class _Partial:
    """What a speculative pass wrote before a role differed from its snapshot."""

    config: dict[str, Any] | None  # the config role before the pass (None: there was none)
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)  # machine roles, as read


class _Stale(Exception):
    """A role read under the locks differs from the snapshot the commit was validated against."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


@dataclass
class CommitResult:
    """The outcome of a commit."""

    proposal: ProposalRef
    revision: int
    status: str  # applied | unchanged | queued | planned | deactivated
    reasons: list[str] = field(default_factory=list)
    changes: list[RoleChange] = field(default_factory=list)
    machines_written: int = 0
    repaired_nodes: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def queued(self) -> bool:
        return self.status == "queued"

    def as_dict(self) -> dict[str, Any]:
        return {
            "proposal": str(self.proposal), "revision": self.revision, "status": self.status,
            "reasons": self.reasons, "machines_written": self.machines_written,
            "repaired_nodes": self.repaired_nodes, "drifted": self.drifted,
            "seconds": round(self.seconds, 3),
            "changes": [c.as_dict() for c in self.changes],
        }


def config_role(proposal: Proposal) -> dict[str, Any]:
    """The role a committed proposal becomes (attributes default, deployment override)."""
    deployment = {k: copy.deepcopy(v) for k, v in proposal.deployment.items() if k not in STATUS_KEYS}
    role = {
        "name": proposal.config_role,
        "json_class": "Chef::Role",
        "chef_type": "role",
        "description": f"Committed proposal {proposal.barclamp}/{proposal.name} (barclamp-sdk)",
        "default_attributes": {proposal.barclamp: copy.deepcopy(proposal.attributes)},
        "override_attributes": {proposal.barclamp: deployment},
        "run_list": [],
        "env_run_lists": {},
    }
    deployment[FINGERPRINT] = _config_fingerprint(role, proposal.barclamp)
    return role


def _config_fingerprint(role: Mapping[str, Any], barclamp: str) -> str:
    body = copy.deepcopy(dict(role))
    body.pop("description", None)
    body.get("override_attributes", {}).get(barclamp, {}).pop(FINGERPRINT, None)
    for key in ("json_class", "chef_type"):
        body.pop(key, None)
    return fingerprint(body)


def config_role_drifted(role: Mapping[str, Any], barclamp: str) -> bool:
    stored = (role.get("override_attributes") or {}).get(barclamp, {}).get(FINGERPRINT)
    return stored is not None and stored != _config_fingerprint(role, barclamp)


def _strip_volatile(role: Mapping[str, Any]) -> dict[str, Any]:
    """A role minus what the server adds and our own fingerprints."""
    body = copy.deepcopy(dict(role))
    for key in ("json_class", "chef_type"):
        body.pop(key, None)
    for attributes in ("default_attributes", "override_attributes"):
        for value in (body.get(attributes) or {}).values():
            if isinstance(value, dict):
                value.pop(FINGERPRINT, None)
                value.pop(DRIFT, None)
    body.setdefault("env_run_lists", {})
    return body


@dataclass
class MachinePlan:
    """What a proposal wants on one machine."""

    node: str
    entries: dict[str, dict[str, Any]]
    claims: dict[str, str]
    batch: int


@dataclass
class Desired:
    """What a proposal wants on all its machines, and in its config role."""

    proposal: Proposal
    entries: dict[str, dict[str, dict[str, Any]]]
    claims: dict[str, dict[str, str]]
    config: dict[str, Any]

    def plan_for(self, node: str, current: MachineRecord | None) -> MachinePlan:
        want = self.entries.get(node, {})
        have = {r: e for r, e in (current.entries if current else {}).items() if e.owner == self.proposal.ref.key}
        changed = set(want) ^ set(have) | {r for r in want if r in have and _entry(want[r]) != have[r]}
        return MachinePlan(node, want, self.claims.get(node, {}), _batch_of(self.proposal.definition, changed))

    def satisfied(self, record: MachineRecord) -> bool:
        """Whether a machine's role already holds exactly what is wanted."""
        key = self.proposal.ref.key
        want = self.entries.get(record.name, {})
        have = {r: e for r, e in record.entries.items() if e.owner == key}
        return ({r: _entry(s) for r, s in want.items()} == have
                and self.claims.get(record.name, {}) == {d: o for d, o in record.claims.items() if o == key}
                and key not in record.pending and (record.allocated or not want) and not record.drifted)


def _entry(spec: Mapping[str, Any]) -> Entry:
    return Entry(spec["proposal"], spec["priority"], tuple(spec["states"]))


def _batch_of(definition: Barclamp, roles: set[str]) -> int:
    for index, batch in enumerate(definition.batches()):
        if roles & set(batch):
            return index
    return 0


def machine_mutation(key: str, plan: MachinePlan) -> Callable[[dict[str, Any]], bool]:
    """Edit a machine's role to hold exactly what ``plan`` wants of proposal ``key``."""
    def mutate(role: dict[str, Any]) -> bool:
        data = crowbar_data(role)
        run_list_map = data.setdefault("run_list_map", {})
        before = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"), data.get("allocated")])
        for name, spec in list(run_list_map.items()):
            if spec.get("proposal") == key and name not in plan.entries:
                del run_list_map[name]
        for name, spec in plan.entries.items():
            owner = (run_list_map.get(name) or {}).get("proposal")
            if owner not in (None, "", key):
                raise CrowbarError(f"{plan.node} already has {name} from proposal {owner}")
            run_list_map[name] = dict(spec)
        claims = data.setdefault("claimed_disks", {})
        for device, owner in list(claims.items()):
            if owner == key and device not in plan.claims:
                del claims[device]
        for device, owner in plan.claims.items():
            if claims.get(device) not in (None, owner):
                raise CrowbarError(f"disk {device} on {plan.node} is claimed by {claims[device]}")
            claims[device] = owner
        (data.get("pending") or {}).pop(key, None)
        if plan.entries and not data.get("allocated"):
            data["allocated"] = True
        after = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"), data.get("allocated")])
        return before != after

    return mutate


def _change_role(key: str, plan: MachinePlan, role: dict[str, Any], *, drifted: bool) -> bool:
    """Apply ``plan`` to a machine's role; True if it changed.

    A drifted role (edited by hand, overwritten with --force) is always
    rewritten, its drift mark dropped.
    """
    changed = machine_mutation(key, plan)(role)
    if drifted:
        crowbar_data(role).pop(DRIFT, None)
        changed = True
    return changed


class Committer:
    """Plans and applies commits (used through ``Crowbar.proposals.commit``)."""

    def __init__(self, crowbar: Crowbar) -> None:
        self.crowbar = crowbar
        self.chef = crowbar.chef

    # -- what is wanted, and what changed ---------------------------------------------------

    def desired(self, proposal: Proposal) -> Desired:
        definition = proposal.definition
        key = proposal.ref.key
        entries: dict[str, dict[str, dict[str, Any]]] = {}
        for element in definition.elements:
            spec = {"priority": definition.priority(element), "states": list(element.states), "proposal": key}
            for node in proposal.elements.get(element.name, []):
                entries.setdefault(node, {})[element.name] = dict(spec)
        for node_entries in entries.values():
            states = {s for spec in node_entries.values() for s in spec["states"]}
            node_entries[proposal.config_role] = {
                "priority": definition.effective_chef_order,
                "states": ["all"] if "all" in states else sorted(states), "proposal": key}
        members = set(proposal.nodes())
        claims = {node: {device: key for device in devices}
                  for node, devices in definition.claims(proposal).items() if node in members}
        return Desired(proposal, entries, claims, config_role(proposal))

    def applied(self, proposal: Proposal) -> tuple[Proposal | None, dict[str, Any] | None]:
        """The revision last applied (from history) and the config role."""
        role = self.chef.roles.find(proposal.config_role)
        revision = ((role or {}).get("override_attributes") or {}).get(proposal.barclamp, {}).get("crowbar-revision")
        if not revision:
            return None, role
        try:
            return self.crowbar.proposals.store.revision(proposal.barclamp, proposal.name, int(revision)), role
        except CrowbarError:
            return None, role

    def _changed_nodes(self, proposal: Proposal, applied: Proposal) -> set[str]:
        now, then = self.desired(proposal), self.desired(applied)
        nodes = set(now.entries) | set(then.entries) | set(now.claims) | set(then.claims)
        return {n for n in nodes if now.entries.get(n) != then.entries.get(n) or now.claims.get(n) != then.claims.get(n)}

    def _precheck(self, proposal: Proposal) -> None:
        """Checks that need no lock and no role: bad input writes nothing."""
        errors = check_shape(proposal) or check_attributes(proposal)
        if not errors:
            existing = {name for name in self.chef.roles.list() if name.startswith(NODE_ROLE_PREFIX)}
            stub = ClusterView({n: MachineRecord(n, node_role_name(n), "", False, {}, {}, {}, False, 0, {})
                                for n in proposal.nodes() if node_role_name(n) in existing})
            errors = check_elements(proposal, stub)
        if errors:
            raise ValidationError(errors, subject=f"{proposal.barclamp}/{proposal.name}")

    def _missing_element_roles(self, definition: Barclamp) -> list[dict[str, Any]]:
        missing = []
        for role in definition.element_roles():
            current = self.chef.roles.find(role["name"])
            if current is None or _strip_volatile(current) != _strip_volatile(role):
                missing.append(role)
        return missing

    def dependency_blockers(self, proposal: Proposal) -> list[str]:
        """Dependencies that are missing, queued, not applied or being applied."""
        reasons = []
        definition = proposal.definition
        for dep in definition.all_dependencies(proposal, Context(self.crowbar, definition)):
            other = self.crowbar.proposals.store.find(dep.barclamp, dep.name)
            if other is None:
                reasons.append(f"depends on {dep}, which does not exist: create and commit it")
            elif other.deployment.get("crowbar-queued"):
                reasons.append(f"depends on {dep}, which is queued")
            elif self.chef.roles.find(other.config_role) is None:
                reasons.append(f"depends on {dep}, which is not applied yet: commit it")
            else:
                lock = self.crowbar.locks.inspect(proposal_lock_name(dep.barclamp, dep.name))
                if lock is not None and "commit" in str(lock.get("purpose")) and not self.crowbar.locks.expired(lock):
                    reasons.append(f"depends on {dep}, which is being applied right now")
        return reasons

    def blockers(self, proposal: Proposal, cluster: ClusterView) -> list[str]:
        """Why the proposal cannot be applied now (empty when it can)."""
        reasons = self.dependency_blockers(proposal)
        waiting = []
        ready = set(proposal.definition.ready_states)
        for node in proposal.nodes():
            record = cluster.get(node)
            if record is None or record.state in ready:
                continue
            detail = record.state or "unknown state"
            if record.state == "discovered" and not record.allocated:
                detail += ", waiting for allocation"
            waiting.append(f"{node} ({detail})")
        if waiting:
            shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
            reasons.append(f"{len(waiting)} machine(s) not {'/'.join(sorted(ready))} yet: {shown}")
        return reasons

    # -- the commit ---------------------------------------------------------------------------

    def commit(self, barclamp: str, name: str, *, dry_run: bool = False, force: bool = False,
               in_queue: bool = False, progress: Callable[[int], None] | None = None) -> CommitResult:
        started = time.monotonic()
        proposal = self.crowbar.proposals.store.get(barclamp, name)
        self._precheck(proposal)
        applied, config = self.applied(proposal)
        status_ok = (proposal.deployment.get("crowbar-status") == "success"
                     and not proposal.deployment.get("crowbar-queued"))
        involved = set(proposal.nodes()) | set(applied.nodes() if applied else [])
        if dry_run:
            result = self._dry_run(proposal, sorted(involved), config)
        elif (proposal.deployment.get("crowbar-queued") or in_queue or self.dependency_blockers(proposal)) and (
                blocked := self.blockers(proposal, self.crowbar.machines.cluster())):
            result = self.crowbar.queue.enqueue(proposal, blocked)  # still waiting: nothing locked
        else:
            changed = self._changed_nodes(proposal, applied) if applied is not None and status_ok else None
            if changed is not None and len(changed) <= SMALL_CHANGE * max(1, len(involved)):
                result = self._small_commit(proposal, changed, config, force=force, in_queue=in_queue,
                                            progress=progress)
            else:
                result = self._apply(proposal, sorted(involved), force=force, progress=progress)
            if not in_queue and result.status == "applied":
                self.crowbar.queue.process()
        result.seconds = time.monotonic() - started
        return result

    def _small_commit(self, proposal: Proposal, changed: set[str], config: dict[str, Any] | None, *,
                      force: bool, in_queue: bool, progress: Callable[[int], None] | None) -> CommitResult:
        """Plan from a search snapshot; lock and write only what differs."""
        cluster = self.crowbar.machines.cluster()
        desired = self.desired(proposal)
        targets = set(changed)
        for node in set(desired.entries) | set(desired.claims):
            record = cluster.get(node)
            if record is None or not desired.satisfied(record):  # absent: the index may lag
                targets.add(node)
        key = proposal.ref.key
        targets.update(r.name for r in cluster if r.name not in desired.entries and (
            any(e.owner == key for e in r.entries.values()) or key in r.claims.values() or key in r.pending))
        config_current = (config is not None and _strip_volatile(config) == _strip_volatile(desired.config)
                          and not config_role_drifted(config, proposal.barclamp))
        if not targets and config_current and not self._missing_element_roles(proposal.definition):
            if in_queue or self._queued(proposal.ref):
                self.crowbar.queue.remove(proposal.ref)
            return CommitResult(proposal.ref, proposal.revision, "unchanged")
        return self._apply(proposal, sorted(targets), force=force, progress=progress)

    def _queued(self, ref: ProposalRef) -> bool:
        return any(i.get("barclamp") == ref.barclamp and i.get("inst") == ref.name for i in self.crowbar.queue.items())

    def _apply(self, proposal: Proposal, targets: list[str], *, force: bool,
               progress: Callable[[int], None] | None) -> CommitResult:
        """Under the proposal's lock and the targets' shard locks: read, check, write."""
        ref = proposal.ref
        store = self.crowbar.proposals.store
        with self.crowbar.locks.hold(proposal_lock_name(ref.barclamp, ref.name),
                                     f"commit {ref} r{proposal.revision}") as lock:
            current = store.get(ref.barclamp, ref.name)
            if current.revision != proposal.revision:  # edited meanwhile: commit what is there now
                applied, _ = self.applied(current)
                proposal = current
                targets = sorted(set(current.nodes()) | set(applied.nodes() if applied else []))
            else:
                proposal = current
            blocked: list[str] = []
            with self.crowbar.machines.roles.locked(targets, f"commit {ref} r{proposal.revision}") as held:
                snapshot = self.crowbar.machines.cluster()  # taken under the locks
                outcome = self._speculate(proposal, targets, snapshot, held, lock, force=force, progress=progress)
                partial = outcome if isinstance(outcome, _Partial) else None
                if isinstance(outcome, tuple):
                    written, overwritten = outcome
                else:
                    try:
                        roles = {n: r for n, r in held.fetch().items() if r is not None}
                        fresh = {n: record_from_role(r) for n, r in roles.items()}
                        # After a mismatch the snapshot is not trusted for any machine.
                        records = {**({r.name: r for r in snapshot} if partial is None else {}),
                                   **{n: r for n, r in fresh.items() if r is not None}}
                        view = ClusterView(records)
                        validate(self.crowbar, proposal, cluster=view)
                        blocked = self.blockers(proposal, view)
                        if blocked and partial is not None:
                            self._undo(proposal, partial, held)
                        if not blocked:
                            written, overwritten = self._write(proposal, roles, fresh, held, lock, force=force,
                                                               prepared=partial is not None, progress=progress)
                            written += len(partial.originals) if partial is not None else 0
                    except (ValidationError, DriftError):
                        if partial is not None:  # refused after all: undo what the speculative pass wrote
                            self._undo(proposal, partial, held)
                        raise
            if blocked:
                return self.crowbar.queue.enqueue(proposal, blocked)
            try:
                proposal.definition.apply_post(Context(self.crowbar, proposal.definition), None, proposal)
            except CrowbarError as exc:
                self._record_status(proposal, failed=str(exc))
                raise
            self.crowbar.queue.remove(ref)
            self._record_status(proposal)
        repaired = self.crowbar.machines.check_run_lists(proposal.nodes())
        return CommitResult(ref, proposal.revision, "applied", machines_written=written,
                            repaired_nodes=repaired, drifted=overwritten)

    def _speculate(self, proposal: Proposal, targets: list[str], view: ClusterView, held: Any, lock: Any, *,
                   force: bool, progress: Callable[[int], None] | None) -> tuple[int, list[str]] | _Partial | None:
        """Validate against ``view`` (a search snapshot taken under the locks), then read and write each role in one go.

        The floor of a commit is one GET and one PUT per role; validating
        against every fresh role first would keep the reads from overlapping
        the server's writes. Here each role read is compared with the
        snapshot the proposal was validated against: equal (the normal case,
        the locks keep other writers out), it is changed and written at
        once. Returns (written, overwritten) when done; None when the
        snapshot did not allow a verdict (nothing written); or, when a role
        differed (search lagged), what was written so far (:class:`_Partial`),
        for the careful path to check everything and undo it if refused.
        """
        records = {node: view.get(node) for node in targets}
        if any(record is None for record in records.values()):
            return None
        try:
            validate(self.crowbar, proposal, cluster=view)
        except ValidationError:
            return None  # maybe only the snapshot is behind: the careful path decides
        if self.blockers(proposal, view):
            return None
        desired = self.desired(proposal)
        config = self.chef.roles.find(proposal.config_role)
        drifted_nodes = sorted(n for n, r in records.items() if r is not None and r.drifted)
        drift = self._refuse_drift(proposal, config, drifted_nodes, force=force)
        self._prepare(proposal, desired, config, drifted=bool(drift), lock=lock)
        key = proposal.ref.key
        plans = {node: desired.plan_for(node, records[node]) for node in targets}
        partial = _Partial(config)
        originals = partial.originals
        guard = threading.Lock()

        def step(node: str) -> int:
            role = held.read(node)
            if role is None or record_from_role(role) != records[node]:
                raise _Stale(node)
            original = copy.deepcopy(role)
            try:
                changed = _change_role(key, plans[node], role, drifted=node in drifted_nodes)
            except CrowbarError:
                raise _Stale(node) from None  # the snapshot missed a conflict: let the careful path name it
            if not changed:
                return 0
            held.put(node, role)
            with guard:
                originals[node] = original
            if progress is not None:
                progress(1)
            return 1

        batches: dict[int, list[str]] = {}
        for node in sorted(plans):
            batches.setdefault(plans[node].batch, []).append(node)
        try:
            written = self._in_batches(proposal, lock, batches, lambda nodes: sum(run_parallel(
                step, nodes, workers=self.crowbar.machines.roles.concurrency, name="commit")))
        except _Stale as stale:
            log.info("%s: %s changed since the search snapshot; checking every machine", proposal.ref, stale.node)
            return partial
        except CrowbarError as exc:
            self._record_status(proposal, failed=str(exc))
            raise
        return written, drifted_nodes

    def _in_batches(self, proposal: Proposal, lock: Any, batches: Mapping[int, Any],
                    write_batch: Callable[[Any], int]) -> int:
        """``write_batch`` over the batches in element order; progress recorded in the lock between them."""
        written = 0
        order = sorted(batches)
        for position, index in enumerate(order):
            written += write_batch(batches[index])
            if position < len(order) - 1:
                self.crowbar.locks.update(lock, batch=index + 1, batches=len(proposal.definition.batches()),
                                          machines_done=written, revision=proposal.revision)
        return written

    def _undo(self, proposal: Proposal, partial: _Partial, held: Any) -> None:
        """Put back the machine roles and the config role a speculative pass wrote."""
        held.restore(partial.originals)
        if partial.config is not None:
            self._upload(partial.config)
        else:
            try:
                self.chef.roles.delete(proposal.config_role)
            except NotFound:
                pass

    def _refuse_drift(self, proposal: Proposal, config: dict[str, Any] | None, drifted_nodes: list[str], *,
                      force: bool) -> list[str]:
        """Roles changed by hand since we wrote them; DriftError unless ``force``."""
        drift = [proposal.config_role] if config is not None and config_role_drifted(config, proposal.barclamp) else []
        drift += [node_role_name(n) for n in drifted_nodes]
        if drift and not force:
            raise DriftError(
                f"{len(drift)} role(s) were changed by hand since barclamp-sdk wrote them "
                f"({', '.join(drift[:3])}{' ...' if len(drift) > 3 else ''}); nothing was written. "
                f"Review them (`crowbar raw GET /roles/NAME`), then commit with --force to overwrite")
        return drift

    def _prepare(self, proposal: Proposal, desired: Desired, config: dict[str, Any] | None, *, drifted: bool,
                 lock: Any) -> None:
        """Before machine roles: the barclamp's apply_pre, element roles, the config role."""
        definition = proposal.definition
        old = self.applied(proposal)[0] if config is not None else None
        try:
            definition.apply_pre(Context(self.crowbar, definition), old, proposal)
            for role in self._missing_element_roles(definition):
                self._upload(role)
            if config is None or _strip_volatile(config) != _strip_volatile(desired.config) or drifted:
                self.crowbar.locks.ensure_valid(lock)
                self._upload(desired.config)
        except CrowbarError as exc:
            self._record_status(proposal, failed=str(exc))
            raise

    def _write(self, proposal: Proposal, roles: dict[str, dict[str, Any]],
               records: Mapping[str, MachineRecord | None], held: Any, lock: Any, *,
               force: bool, prepared: bool = False,
               progress: Callable[[int], None] | None) -> tuple[int, list[str]]:
        """Mutate and write the roles; (machines written, hand-edited roles overwritten).

        ``prepared``: a speculative pass already ran :meth:`_prepare` under
        the same locks (apply_pre is not called twice).
        """
        desired = self.desired(proposal)
        config = self.chef.roles.find(proposal.config_role)
        drifted_nodes = sorted(n for n, r in records.items() if r is not None and r.drifted)
        drift = self._refuse_drift(proposal, config, drifted_nodes, force=force)
        batches: dict[int, dict[str, dict[str, Any]]] = {}
        key = proposal.ref.key
        failures = []
        for node, role in roles.items():
            plan = desired.plan_for(node, records.get(node))
            try:
                changed = _change_role(key, plan, role, drifted=node in drifted_nodes)
            except CrowbarError as exc:
                failures.append(str(exc))
                continue
            if changed:
                batches.setdefault(plan.batch, {})[node] = role
        if failures:
            raise ValidationError(failures, subject=str(proposal.ref))
        if not prepared:
            self._prepare(proposal, desired, config, drifted=bool(drift), lock=lock)
        try:
            written = self._in_batches(proposal, lock, batches,
                                       lambda roles: len(held.write(roles, progress=progress)))
        except CrowbarError as exc:
            self._record_status(proposal, failed=str(exc))
            raise
        return written, drifted_nodes

    def _upload(self, role: dict[str, Any]) -> None:
        try:
            self.chef.roles.update(role["name"], role)
        except NotFound:
            self.chef.roles.create(role)

    def _record_status(self, proposal: Proposal, *, failed: str | None = None) -> None:
        deployment = proposal.deployment
        before = {k: deployment.get(k) for k in STATUS_KEYS}
        if failed:
            deployment["crowbar-status"] = "failed"
            deployment["crowbar-failed"] = failed
        else:
            deployment["crowbar-status"] = "success"
            deployment.pop("crowbar-failed", None)
        deployment.pop("crowbar-queued", None)
        if {k: deployment.get(k) for k in STATUS_KEYS} != before:
            try:
                self.crowbar.proposals.store.write_status(proposal)
            except CrowbarError as exc:
                log.warning("could not record the status of %s: %s", proposal.ref, exc)

    # -- deactivation and dry runs ----------------------------------------------------------------

    def deactivate(self, barclamp: str, name: str) -> CommitResult:
        """Remove everything a committed proposal put on machines, then its config role."""
        started = time.monotonic()
        store = self.crowbar.proposals.store
        proposal = store.get(barclamp, name)
        key = proposal.ref.key
        emptied = proposal.copy()
        for element in list(emptied.elements):
            emptied.elements[element] = []
        cluster = self.crowbar.machines.cluster()
        holders = [r.name for r in cluster if any(e.owner == key for e in r.entries.values())
                   or key in r.claims.values() or key in r.pending]
        with self.crowbar.locks.hold(proposal_lock_name(barclamp, name), f"deactivate {proposal.ref}") as lock:
            with self.crowbar.machines.roles.locked(holders, f"deactivate {proposal.ref}") as held:
                roles = {n: r for n, r in held.fetch().items() if r is not None}
                plan_empty = MachinePlan("", {}, {}, 0)
                changed = {}
                for node, role in roles.items():
                    plan_empty.node = node
                    if machine_mutation(key, plan_empty)(role):
                        changed[node] = role
                self.crowbar.locks.ensure_valid(lock)
                written = held.write(changed)
            try:
                self.chef.roles.delete(proposal.config_role)
            except NotFound:
                pass
            self.crowbar.queue.remove(proposal.ref)
            for status in STATUS_KEYS:
                proposal.deployment.pop(status, None)
            store.write_status(proposal)
        return CommitResult(proposal.ref, proposal.revision, "deactivated", machines_written=len(written),
                            seconds=time.monotonic() - started)

    def _dry_run(self, proposal: Proposal, involved: Iterable[str], config: dict[str, Any] | None) -> CommitResult:
        names = list(involved)
        roles = dict(zip(names, run_parallel(lambda n: self.chef.roles.find(node_role_name(n)), names,
                                             workers=self.crowbar.concurrency, name="dry-run")))
        records = {n: record_from_role(r) for n, r in roles.items() if r is not None}
        view = ClusterView({n: r for n, r in records.items() if r is not None})
        validate(self.crowbar, proposal, cluster=view)
        desired = self.desired(proposal)
        changes = []
        for role in self._missing_element_roles(proposal.definition):
            changes.append(RoleChange(role["name"], "update" if self.chef.roles.find(role["name"]) else "create",
                                      run_list_after=role["run_list"]))
        if config is None or _strip_volatile(config) != _strip_volatile(desired.config):
            change = RoleChange(proposal.config_role, "update" if config else "create")
            if config:
                change.changes = [str(c) for c in diff(_strip_volatile(config), _strip_volatile(desired.config))]
            changes.append(change)
        key = proposal.ref.key
        drift = []
        for node in sorted(roles):
            role = roles[node]
            if role is None:
                continue
            after = copy.deepcopy(role)
            moved = machine_mutation(key, desired.plan_for(node, records.get(node)))(after)
            if drifted(role):
                drift.append(node)
            if not moved and not drifted(role):
                continue
            before_map = crowbar_data(role).get("run_list_map") or {}
            after_map = crowbar_data(after).get("run_list_map") or {}
            changes.append(RoleChange(
                role=role["name"], action="update", node=node,
                run_list_before=list(role.get("run_list") or []),
                run_list_after=active_run_list(crowbar_data(after)),
                added=sorted(set(after_map) - set(before_map)), removed=sorted(set(before_map) - set(after_map)),
                changes=[str(c) for c in diff(crowbar_data(role).get("claimed_disks") or {},
                                              crowbar_data(after).get("claimed_disks") or {}, "claimed_disks")]
                + (["drifted: changed by hand since barclamp-sdk wrote it"] if drifted(role) else [])))
        return CommitResult(proposal.ref, proposal.revision, "planned", reasons=self.blockers(proposal, view),
                            changes=changes, drifted=drift)


