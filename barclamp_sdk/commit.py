"""Committing a proposal: from document to Chef roles.

1. Plan without writing: validate; find what blocks (dependencies not
   applied, machines not ready); compute the ``<bc>-config-<name>`` role and,
   for every machine, the run-list entries, claimed disks and pending marks
   this proposal owns. A machine whose role already matches is left alone, so
   committing an unchanged proposal writes nothing (and takes no lock).
2. Blocked: queue the proposal with the reasons (see :mod:`barclamp_sdk.queue`).
3. Otherwise, under the proposal's lock: write the config role first (nodes
   must never name a role that does not exist), then the machines' roles batch
   by batch in ``element_order``, each read from its object endpoint and
   written under its shard lock. Progress is recorded in the lock item, so an
   interrupted commit shows as such; committing again finishes the job.

A dry run returns the exact role changes (each affected role is read) and
writes nothing.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from barclamp_sdk.barclamp import Barclamp, ProposalRef
from barclamp_sdk.cluster import ClusterView, Entry
from barclamp_sdk.context import Context
from barclamp_sdk.document import Proposal
from barclamp_sdk.errors import CrowbarError, DriftError, NotFound
from barclamp_sdk.jsondoc import canonical_json, diff, fingerprint
from barclamp_sdk.naming import node_role_name, proposal_lock_name
from barclamp_sdk.noderoles import (
    DRIFT,
    FINGERPRINT,
    UpdateReport,
    active_run_list,
    crowbar_data,
    drifted,
)
from barclamp_sdk.validation import validate

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar

log = logging.getLogger(__name__)

STATUS_KEYS = ("crowbar-status", "crowbar-failed", "crowbar-queued")


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
class CommitResult:
    """The outcome of a commit."""

    proposal: ProposalRef
    revision: int
    status: str  # applied | unchanged | queued | planned
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
    deployment = {k: copy.deepcopy(v) for k, v in proposal.deployment.items()
                  if k not in STATUS_KEYS}
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


@dataclass
class _MachinePlan:
    node: str
    entries: dict[str, dict[str, Any]]
    claims: dict[str, str]
    batch: int


@dataclass
class Plan:
    """What a commit has to write."""

    proposal: Proposal
    config: dict[str, Any]
    config_changed: bool
    config_exists: bool
    config_drifted: bool
    machines: dict[str, _MachinePlan]
    drifted_machines: list[str]
    blockers: list[str]
    missing_element_roles: list[dict[str, Any]]

    @property
    def empty(self) -> bool:
        return not (self.config_changed or self.machines or self.missing_element_roles)


class Committer:
    """Plans and applies commits (used through ``Crowbar.proposals.commit``)."""

    def __init__(self, crowbar: Crowbar) -> None:
        self.crowbar = crowbar
        self.chef = crowbar.chef

    # -- planning ------------------------------------------------------------------------

    def _desired(self, proposal: Proposal) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, str]]]:
        definition = proposal.definition
        key = proposal.ref.key
        entries: dict[str, dict[str, dict[str, Any]]] = {}
        for element in definition.elements:
            spec = {"priority": definition.priority(element), "states": list(element.states), "proposal": key}
            for node in proposal.elements.get(element.name, []):
                entries.setdefault(node, {})[element.name] = dict(spec)
        for node, node_entries in entries.items():
            states: set[str] = set()
            for spec in node_entries.values():
                states.update(spec["states"])
            node_entries[proposal.config_role] = {
                "priority": definition.effective_chef_order,
                "states": ["all"] if "all" in states else sorted(states),
                "proposal": key,
            }
        members = set(proposal.nodes())
        claims = {node: {device: key for device in devices}
                  for node, devices in definition.claims(proposal).items() if node in members}
        return entries, claims

    def _batch_of(self, definition: Barclamp, roles: set[str]) -> int:
        for index, batch in enumerate(definition.batches()):
            if roles & set(batch):
                return index
        return 0

    def plan(self, proposal: Proposal, cluster: ClusterView) -> Plan:
        """Everything the commit must write, from a snapshot (reads only)."""
        definition = proposal.definition
        key = proposal.ref.key
        desired_entries, desired_claims = self._desired(proposal)
        machines: dict[str, _MachinePlan] = {}
        drifted_machines = []
        touched = set(desired_entries) | set(desired_claims)
        for record in cluster:
            if (any(e.owner == key for e in record.entries.values())
                    or key in record.claims.values() or key in record.pending):
                touched.add(record.name)
        for node in sorted(touched):
            record = cluster.get(node)
            want = desired_entries.get(node, {})
            want_claims = desired_claims.get(node, {})
            if record is None:
                continue  # validation reports unknown machines
            have = {r: e for r, e in record.entries.items() if e.owner == key}
            have_claims = {d: o for d, o in record.claims.items() if o == key}
            same = (
                {r: Entry(s["proposal"], s["priority"], tuple(s["states"])) for r, s in want.items()} == have
                and want_claims == have_claims and key not in record.pending
                and (record.allocated or not want)
            )
            if record.drifted:
                drifted_machines.append(node)
            if same and not record.drifted:
                continue
            changed_roles = set(want) ^ set(have) | {r for r in want if r in have and
                                                     Entry(want[r]["proposal"], want[r]["priority"], tuple(want[r]["states"])) != have[r]}
            machines[node] = _MachinePlan(node, want, want_claims,
                                          self._batch_of(definition, changed_roles))
        desired_config = config_role(proposal)
        existing = self.chef.roles.find(proposal.config_role)
        config_changed = existing is None or _strip_volatile(existing) != _strip_volatile(desired_config)
        missing_roles = self._missing_element_roles(definition)
        blockers = self.blockers(proposal, cluster)
        return Plan(
            proposal=proposal, config=desired_config, config_changed=config_changed,
            config_exists=existing is not None,
            config_drifted=existing is not None and config_role_drifted(existing, proposal.barclamp),
            machines=machines, drifted_machines=drifted_machines, blockers=blockers,
            missing_element_roles=missing_roles,
        )

    def _missing_element_roles(self, definition: Barclamp) -> list[dict[str, Any]]:
        missing = []
        for role in definition.element_roles():
            current = self.chef.roles.find(role["name"])
            if current is None or _strip_volatile(current) != _strip_volatile(role):
                missing.append(role)
        return missing

    def blockers(self, proposal: Proposal, cluster: ClusterView) -> list[str]:
        """Why the proposal cannot be applied now (empty when it can)."""
        reasons = []
        definition = proposal.definition
        ctx = Context(self.crowbar, definition)
        for dep in definition.all_dependencies(proposal, ctx):
            other = self.crowbar.proposals.store.find(dep.barclamp, dep.name)
            if other is None:
                reasons.append(f"depends on {dep}, which does not exist: create and commit it")
                continue
            if other.deployment.get("crowbar-queued"):
                reasons.append(f"depends on {dep}, which is queued")
                continue
            if self.chef.roles.find(other.config_role) is None:
                reasons.append(f"depends on {dep}, which is not applied yet: commit it")
                continue
            lock = self.crowbar.locks.inspect(proposal_lock_name(dep.barclamp, dep.name))
            if lock is not None and "commit" in str(lock.get("purpose")) and not self.crowbar.locks.expired(lock):
                reasons.append(f"depends on {dep}, which is being applied right now")
        waiting = []
        ready_states = set(definition.ready_states)
        for node in proposal.nodes():
            record = cluster.get(node)
            if record is None or record.state in ready_states:
                continue
            detail = record.state or "unknown state"
            if record.state == "discovered" and not record.allocated:
                detail += ", waiting for allocation"
            waiting.append(f"{node} ({detail})")
        if waiting:
            shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
            wanted = "/".join(sorted(ready_states))
            reasons.append(f"{len(waiting)} machine(s) not {wanted} yet: {shown}")
        return reasons

    # -- mutation of one machine's role ------------------------------------------------------

    @staticmethod
    def machine_mutation(key: str, plan: _MachinePlan) -> Callable[[dict[str, Any]], bool]:
        def mutate(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            run_list_map = data.setdefault("run_list_map", {})
            before = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"),
                                     data.get("allocated")])
            for name, spec in list(run_list_map.items()):
                if spec.get("proposal") == key and name not in plan.entries:
                    del run_list_map[name]
            for name, spec in plan.entries.items():
                current = run_list_map.get(name)
                owner = (current or {}).get("proposal")
                if current is not None and owner not in (None, "", key):
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
            after = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"),
                                    data.get("allocated")])
            return before != after

        return mutate

    # -- the commit -----------------------------------------------------------------------------

    def commit(self, barclamp: str, name: str, *, dry_run: bool = False, force: bool = False,
               in_queue: bool = False, progress: Callable[[int], None] | None = None) -> CommitResult:
        started = time.monotonic()
        store = self.crowbar.proposals.store
        proposal = store.get(barclamp, name)
        cluster = self.crowbar.machines.cluster()
        validate(self.crowbar, proposal, cluster=cluster)
        plan = self.plan(proposal, cluster)
        if dry_run:
            result = self._dry_run(plan)
            result.seconds = time.monotonic() - started
            return result
        if plan.blockers:
            result = self.crowbar.queue.enqueue(proposal, plan.blockers)
            result.seconds = time.monotonic() - started
            return result
        status_ok = (proposal.deployment.get("crowbar-status") == "success"
                     and not proposal.deployment.get("crowbar-queued"))
        if plan.empty and not plan.config_drifted and not plan.drifted_machines and status_ok:
            if in_queue or self._queued(proposal.ref):
                self.crowbar.queue.remove(proposal.ref)
            return CommitResult(proposal.ref, proposal.revision, "unchanged",
                                seconds=time.monotonic() - started)
        result = self._apply(proposal, plan, force=force, progress=progress)
        result.seconds = time.monotonic() - started
        if not in_queue:
            self.crowbar.queue.process()
        return result

    def _queued(self, ref: ProposalRef) -> bool:
        return any(i.get("barclamp") == ref.barclamp and i.get("inst") == ref.name
                   for i in self.crowbar.queue.items())

    def _apply(self, proposal: Proposal, plan: Plan, *, force: bool,
               progress: Callable[[int], None] | None) -> CommitResult:
        ref = proposal.ref
        store = self.crowbar.proposals.store
        locks = self.crowbar.locks
        purpose = f"commit {ref} r{proposal.revision}"
        with locks.hold(proposal_lock_name(ref.barclamp, ref.name), purpose) as lock:
            current = store.get(ref.barclamp, ref.name)
            if current.revision != proposal.revision:  # edited while we planned
                proposal = current
                cluster = self.crowbar.machines.cluster()
                validate(self.crowbar, proposal, cluster=cluster)
                plan = self.plan(proposal, cluster)
                if plan.blockers:
                    return self.crowbar.queue.enqueue(proposal, plan.blockers)
            else:
                proposal = current
            drift = ([proposal.config_role] if plan.config_drifted else []) + [
                node_role_name(n) for n in plan.drifted_machines]
            if drift and not force:
                raise DriftError(
                    f"{len(drift)} role(s) were changed by hand since barclamp-sdk wrote them "
                    f"({', '.join(drift[:3])}{' ...' if len(drift) > 3 else ''}); nothing was written. "
                    f"Review them (`crowbar raw GET /roles/NAME`), then commit with --force to overwrite"
                )
            definition = proposal.definition
            ctx = Context(self.crowbar, definition)
            old = self._applied(proposal) if plan.config_exists else None
            try:
                definition.apply_pre(ctx, old, proposal)
                for role in plan.missing_element_roles:
                    locks.ensure_valid(lock)
                    self._upload(role)
                if plan.config_changed or (plan.config_drifted and force):
                    locks.ensure_valid(lock)
                    self._upload(plan.config)
                written = self._write_machines(proposal, plan, force=force, lock=lock, progress=progress)
                repaired = self.crowbar.machines.ensure_node_run_list(proposal.nodes())
                definition.apply_post(ctx, old, proposal)
            except CrowbarError as exc:
                self._record_status(proposal, failed=str(exc))
                raise
            self.crowbar.queue.remove(ref)
            self._record_status(proposal)
        return CommitResult(ref, proposal.revision, "applied", machines_written=len(written.written),
                            repaired_nodes=repaired, drifted=sorted(set(written.drifted)))

    def deactivate(self, barclamp: str, name: str) -> CommitResult:
        """Remove everything a committed proposal put on machines, then its config role."""
        started = time.monotonic()
        store = self.crowbar.proposals.store
        ref = ProposalRef(barclamp, name)
        with self.crowbar.locks.hold(proposal_lock_name(barclamp, name), f"deactivate {ref}") as lock:
            proposal = store.get(barclamp, name)
            emptied = proposal.copy()
            for element in list(emptied.elements):
                emptied.elements[element] = []
            plan = self.plan(emptied, self.crowbar.machines.cluster())
            written = self._write_machines(emptied, plan, force=False, lock=lock, progress=None)
            try:
                self.chef.roles.delete(proposal.config_role)
            except NotFound:
                pass
            self.crowbar.queue.remove(ref)
            for key in STATUS_KEYS:
                proposal.deployment.pop(key, None)
            store.write_status(proposal)
        return CommitResult(ref, proposal.revision, "deactivated", machines_written=len(written.written),
                            seconds=time.monotonic() - started)

    def _applied(self, proposal: Proposal) -> Proposal | None:
        role = self.chef.roles.find(proposal.config_role)
        revision = ((role or {}).get("override_attributes") or {}).get(proposal.barclamp, {}).get("crowbar-revision")
        if not revision:
            return None
        try:
            return self.crowbar.proposals.store.revision(proposal.barclamp, proposal.name, int(revision))
        except CrowbarError:
            return None

    def _upload(self, role: dict[str, Any]) -> None:
        try:
            self.chef.roles.update(role["name"], role)
        except NotFound:
            self.chef.roles.create(role)

    def _write_machines(self, proposal: Proposal, plan: Plan, *, force: bool, lock: Any,
                        progress: Callable[[int], None] | None) -> UpdateReport:
        key = proposal.ref.key
        batches = proposal.definition.batches() or [[]]
        report = UpdateReport()
        work = [[p for p in plan.machines.values() if p.batch == index] for index in range(len(batches))]
        remaining = sum(1 for w in work if w)
        for index, items in enumerate(work):
            if not items:
                continue
            self.crowbar.locks.ensure_valid(lock)
            mutations = {p.node: self.machine_mutation(key, p) for p in items}
            part = self.crowbar.machines.roles.update(
                mutations, purpose=f"commit {proposal.ref} r{proposal.revision} batch {index + 1}",
                on_drift="overwrite" if force else "skip", progress=progress)
            report.merge(part)
            remaining -= 1
            if remaining:
                self.crowbar.locks.update(lock, batch=index + 1, batches=len(batches),
                                          machines_done=len(report.written), revision=proposal.revision)
        if report.failed or report.missing or (report.drifted and not force):
            problems = [f"{n}: {e}" for n, e in sorted(report.failed.items())]
            problems += [f"{n}: its role vanished" for n in report.missing]
            problems += [f"{n}: changed by hand meanwhile (commit with --force)" for n in report.drifted]
            raise CrowbarError(
                f"commit of {proposal.ref} stopped with {len(problems)} machine(s) not updated: "
                f"{problems[0]}{' ...' if len(problems) > 1 else ''}; fix and commit again"
            )
        return report

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

    # -- dry run -----------------------------------------------------------------------------

    def _dry_run(self, plan: Plan) -> CommitResult:
        proposal = plan.proposal
        key = proposal.ref.key
        changes = []
        for role in plan.missing_element_roles:
            changes.append(RoleChange(role["name"], "update" if self.chef.roles.find(role["name"]) else "create",
                                      run_list_after=role["run_list"]))
        if plan.config_changed:
            existing = self.chef.roles.find(proposal.config_role)
            change = RoleChange(proposal.config_role, "update" if existing else "create")
            if existing:
                change.changes = [str(c) for c in diff(_strip_volatile(existing), _strip_volatile(plan.config))]
            changes.append(change)
        for node in sorted(plan.machines):
            try:
                role = self.chef.roles.get(node_role_name(node))
            except NotFound:
                continue
            before_map = dict(crowbar_data(role).get("run_list_map") or {})
            before_run_list = list(role.get("run_list") or [])
            after = copy.deepcopy(role)
            if not self.machine_mutation(key, plan.machines[node])(after) and not drifted(role):
                continue
            after_map = crowbar_data(after).get("run_list_map") or {}
            changes.append(RoleChange(
                role=role["name"], action="update", node=node,
                run_list_before=before_run_list, run_list_after=active_run_list(crowbar_data(after)),
                added=sorted(set(after_map) - set(before_map)),
                removed=sorted(set(before_map) - set(after_map)),
                changes=[str(c) for c in diff(crowbar_data(role).get("claimed_disks") or {},
                                              crowbar_data(after).get("claimed_disks") or {}, "claimed_disks")]
                + (["drifted: changed by hand since barclamp-sdk wrote it"] if drifted(role) else []),
            ))
        return CommitResult(proposal.ref, proposal.revision, "planned", reasons=plan.blockers,
                            changes=changes, drifted=plan.drifted_machines)


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
