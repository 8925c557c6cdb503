"""Writing a commit: roles batch by batch, the speculative pass and the careful one, undo.

Both passes run under the proposal's lock and the shard locks of every
machine involved (taken by the :class:`~barclamp_sdk.model.commit.committer.Committer`).
The speculative pass validates against a search snapshot and writes each
role as it reads it; the careful pass reads every role first. A speculative
pass that meets a role differing from its snapshot stops and reports what
it wrote, so that the careful pass can validate everything and undo it if
the commit is refused after all.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError, DriftError, Interrupted, NotFound, ValidationError
from barclamp_sdk.model.cluster import ClusterView, MachineRecord, record_from_role
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.plan import Desired, change_role, config_role_drifted, desired
from barclamp_sdk.model.element_roles import ElementRoles
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.locks import Lock, LockManager
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.noderoles import LockedRoles, comparable_role
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.addresses import CommitAddresses
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.validation import Validator

log = logging.getLogger(__name__)

#: Machines whose new addresses a speculative commit claims at once, before reading their roles.
CLAIM_AHEAD = 512

Progress = Callable[[int], None] | None


@dataclass
class Written:
    """What a pass wrote: machines written and hand-edited roles overwritten."""

    machines: int
    overwritten: list[str]


@dataclass
class Speculation:
    """The outcome of a speculative pass.

    ``written`` when it finished; otherwise ``partial`` says what it wrote
    before a role differed from its snapshot (``stale``), or nothing was
    written because the snapshot did not allow a verdict.
    """

    written: Written | None = None
    stale: bool = False
    config_before: dict[str, Any] | None = None  # the config role before the pass (None: there was none)
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)  # machine roles, as read


class _Stale(Exception):
    """A role read under the locks differs from the snapshot the commit was validated against."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class Writer:
    """Writes a commit's roles under locks the caller holds."""

    def __init__(self, chef: ChefClient, store: ProposalStore, locks: LockManager, validator: Validator,
                 gate: Gate, elements: ElementRoles, services: HookServices, *, concurrency: int) -> None:
        self.chef = chef
        self.store = store
        self.locks = locks
        self.validator = validator
        self.gate = gate
        self.elements = elements
        self.services = services
        self.concurrency = concurrency

    def speculate(self, proposal: Proposal, targets: list[str], view: ClusterView, held: LockedRoles,
                  lock: Lock, config: dict[str, Any] | None, existing: set[str], *, force: bool,
                  progress: Progress, addresses: CommitAddresses | None = None) -> Speculation:
        """Validate against ``view`` (a search snapshot taken under the locks), then read and write each role in one go.

        The floor of a commit is one GET and one PUT per role; validating
        against every fresh role first would keep the reads from overlapping
        the server's writes. Here each role read is compared with the
        snapshot the proposal was validated against: equal (the normal case,
        the locks keep other writers out), it is changed and written at once.
        """
        records = {node: view.get(node) for node in targets}
        if any(record is None for record in records.values()):
            return Speculation()
        try:
            self.validator.validate(proposal, cluster=view)
        except ValidationError:
            return Speculation()  # maybe only the snapshot is behind: the careful pass decides
        if self.gate.blockers(proposal, view):
            return Speculation()
        wanted = desired(proposal)
        drifted_nodes = sorted(n for n, r in records.items() if r is not None and r.drifted)
        drift = self.refuse_drift(proposal, config, drifted_nodes, force=force)
        self.prepare(proposal, wanted, config, existing, drifted=bool(drift), lock=lock)
        key = proposal.ref.key
        plans = {node: wanted.plan_for(node, records[node]) for node in targets}
        outcome = Speculation(config_before=config)
        guard = threading.Lock()

        def step(node: str) -> int:
            role = held.read(node)
            if role is None or record_from_role(role) != records[node]:
                raise _Stale(node)
            original = copy.deepcopy(role)
            try:
                changed = change_role(key, plans[node], role, drifted=node in drifted_nodes)
            except CrowbarError:
                raise _Stale(node) from None  # the snapshot missed a conflict: let the careful pass name it
            if addresses is not None and addresses.apply(node, role):  # in the same write
                changed = True
            if not changed:
                return 0
            held.put(node, role)
            with guard:
                outcome.originals[node] = original
            if progress is not None:
                progress(1)
            return 1

        def write_batch(nodes: list[str]) -> int:
            if not addresses:
                return sum(run_parallel(step, nodes, workers=self.concurrency, name="commit"))
            # New addresses are claimed a chunk ahead of the reads, so each machine's step stays a
            # role read and write; at most a chunk's claims wait unused if the commit stops.
            written = 0
            for start in range(0, len(nodes), CLAIM_AHEAD):
                chunk = nodes[start:start + CLAIM_AHEAD]
                addresses.claim_ahead({node: records[node] for node in chunk})
                written += sum(run_parallel(step, chunk, workers=self.concurrency, name="commit"))
            return written

        try:
            written = self.in_batches(proposal, lock, wanted.batches(plans), write_batch)
        except _Stale as stale:
            log.info("%s: %s changed since the search snapshot; checking every machine", proposal.ref, stale.node)
            outcome.stale = True
            return outcome
        except CrowbarError as exc:
            if not isinstance(exc, Interrupted):  # the committer records how far it got
                self.store.record_status(proposal, failed=str(exc))
            raise
        outcome.written = Written(written, drifted_nodes)
        return outcome

    def in_batches(self, proposal: Proposal, lock: Lock, batches: Mapping[int, Any],
                   write_batch: Callable[[Any], int]) -> int:
        """``write_batch`` over the batches in element order; progress recorded in the lock between them."""
        written = 0
        order = sorted(batches)
        for position, index in enumerate(order):
            written += write_batch(batches[index])
            if position < len(order) - 1:
                self.locks.update(lock, batch=index + 1, batches=len(proposal.definition.batches()),
                                  machines_done=written, revision=proposal.revision)
        return written

    def undo(self, proposal: Proposal, speculation: Speculation, held: LockedRoles,
             addresses: CommitAddresses | None = None) -> None:
        """Put back the machine roles and the config role a speculative pass wrote (and free the
        addresses it claimed for them)."""
        held.restore(speculation.originals)
        if addresses is not None:
            addresses.undo(speculation.originals)
        if speculation.config_before is not None:
            self.elements.upload(speculation.config_before, exists=True)
        else:
            try:
                self.chef.roles.delete(proposal.config_role)
            except NotFound:
                pass

    @staticmethod
    def refuse_drift(proposal: Proposal, config: dict[str, Any] | None, drifted_nodes: list[str], *,
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

    def prepare(self, proposal: Proposal, wanted: Desired, config: dict[str, Any] | None, existing: set[str], *,
                drifted: bool, lock: Lock) -> None:
        """Before machine roles: the barclamp's apply_pre, element roles, the config role."""
        definition = proposal.definition
        old = self.store.applied(proposal.barclamp, proposal.name, config)[0] if config is not None else None
        try:
            definition.apply_pre(self.services.context(definition), old, proposal)
            for role, exists in self.elements.outdated(definition, existing):
                self.locks.ensure_valid(lock)
                self.elements.upload(role, exists=exists)
            if config is None or comparable_role(config) != comparable_role(wanted.config) or drifted:
                self.locks.ensure_valid(lock)
                self.store.write_parts(proposal.id, wanted.config_parts)
                self.elements.upload(wanted.config, exists=config is not None)
        except CrowbarError as exc:
            if not isinstance(exc, Interrupted):  # the committer records how far it got
                self.store.record_status(proposal, failed=str(exc))
            raise

    def write(self, proposal: Proposal, roles: dict[str, dict[str, Any]],
              records: Mapping[str, MachineRecord | None], held: LockedRoles, lock: Lock,
              config: dict[str, Any] | None, existing: set[str], *, force: bool, prepared: bool,
              progress: Progress, addresses: CommitAddresses | None = None) -> Written:
        """The careful pass: mutate and write roles read beforehand.

        ``prepared``: a speculative pass already ran :meth:`prepare` under
        the same locks (apply_pre is not called twice).
        """
        wanted = desired(proposal)
        drifted_nodes = sorted(n for n, r in records.items() if r is not None and r.drifted)
        drift = self.refuse_drift(proposal, config, drifted_nodes, force=force)
        batches: dict[int, dict[str, dict[str, Any]]] = {}
        key = proposal.ref.key
        failures = []
        plans = {}
        for node, role in roles.items():
            plan = plans[node] = wanted.plan_for(node, records.get(node))
            try:
                changed = change_role(key, plan, role, drifted=node in drifted_nodes)
            except CrowbarError as exc:
                failures.append(str(exc))
                continue
            if changed:
                batches.setdefault(plan.batch, {})[node] = role
        if failures:
            raise ValidationError(failures, subject=str(proposal.ref))
        if addresses:  # claimed now (atomic creates, overlapped), written with the rest of each role
            addresses.claim_ahead(records)
            nodes = sorted(roles)
            for node, changed in zip(nodes, run_parallel(lambda n: addresses.apply(n, roles[n]), nodes,
                                                         workers=self.concurrency, name="addresses")):
                if changed:
                    batches.setdefault(plans[node].batch, {})[node] = roles[node]
        if not prepared:
            self.prepare(proposal, wanted, config, existing, drifted=bool(drift), lock=lock)
        try:
            written = self.in_batches(proposal, lock, batches,
                                      lambda batch: len(held.write(batch, progress=progress)))
        except CrowbarError as exc:
            if not isinstance(exc, Interrupted):  # the committer records how far it got
                self.store.record_status(proposal, failed=str(exc))
            raise
        return Written(written, drifted_nodes)
