"""Committing a proposal: from document to Chef roles.

What a commit does, and what it reads and writes, depends on how much changed
since the revision last applied (recorded in the ``<bc>-config-<name>`` role):

* Checks that need no lock come first (document shape, settings, element
  counts, machines that exist), so bad input writes nothing at all.
* A new proposal, or one that changed on many machines: the shard locks of
  every machine involved are taken (one lock item per shard, never per
  machine). With few machines, each role is read from its object endpoint,
  the proposal validated against them, and the changed ones written. With
  many, the proposal is validated against a search snapshot taken under
  those locks and each role is read and written at once, batch by batch in
  ``element_order`` (:mod:`~barclamp_sdk.model.commit.write`); a role that
  does not match its snapshot (search lagging) sends the commit to the
  careful pass, which puts back what was written if the commit is refused.
* A small change, or the same proposal again: one paged partial search says
  which machines differ from what the proposal wants (or were edited by hand);
  only those are locked, re-read and written. An unchanged proposal writes
  nothing and takes no lock.
* Something blocks it (a dependency not applied, a machine not ready): the
  result is ``blocked`` with the reasons; the proposal lifecycle
  (:mod:`barclamp_sdk.model.proposals`) queues it.

The config role is written before any machine role (a node must never name
a role that does not exist). Progress is recorded in the proposal's lock
item, so an interrupted commit shows as such; committing again finishes the
job. A dry run reads what a commit would read and reports the exact role
changes, writing nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError, DriftError, Interrupted, NotFound, ValidationError
from barclamp_sdk.model import stopping
from barclamp_sdk.model.addresses import CommitAddresses, allocate_for_commit, release_for_deactivate
from barclamp_sdk.model.cluster import ClusterView, MachineRecord, record_from_role
from barclamp_sdk.model.commit.dryrun import dry_run
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.plan import SMALL_CHANGE, changed_nodes, config_role_drifted, desired, removal
from barclamp_sdk.model.commit.result import CommitResult
from barclamp_sdk.model.commit.write import Progress, Speculation, Writer
from barclamp_sdk.model.element_roles import ElementRoles
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import node_role_name, proposal_lock_name
from barclamp_sdk.model.nodes import NodeRunLists
from barclamp_sdk.model.noderoles import NodeRoleStore, comparable_role
from barclamp_sdk.model.progress import Reporter, reporter
from barclamp_sdk.model.proposal import STATUS_KEYS, Proposal
from barclamp_sdk.model.reader import DIRECT_READ_LIMIT, ClusterReader
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.validation import Validator, check_attributes, check_elements, check_shape



class Committer:
    """Plans and applies one commit (the lifecycle around it is in :class:`~barclamp_sdk.model.proposals.Proposals`)."""

    def __init__(self, chef: ChefClient, store: ProposalStore, roles: NodeRoleStore, reader: ClusterReader,
                 locks: LockManager, validator: Validator, gate: Gate, elements: ElementRoles,
                 run_lists: NodeRunLists, services: HookServices, *, concurrency: int) -> None:
        self.chef = chef
        self.store = store
        self.roles = roles
        self.reader = reader
        self.locks = locks
        self.validator = validator
        self.gate = gate
        self.elements = elements
        self.run_lists = run_lists
        self.services = services
        self.concurrency = concurrency
        self.writer = Writer(chef, store, locks, validator, gate, elements, services,
                             concurrency=roles.concurrency)

    def commit(self, barclamp: str, name: str, *, dry_run: bool = False, force: bool = False,
               queued: bool = False, progress: Progress | Reporter = None,
               only: Collection[str] | None = None, unfinished: str | None = None,
               document: Proposal | None = None) -> CommitResult:
        """Apply the proposal now, or say what blocks it (status ``blocked``).

        ``queued``: the proposal waits in the queue (look at everything that
        could block it, even when its document is not marked). ``only``: the
        machines whose roles may be written (a rollout's waves so far);
        ``unfinished`` says why the commit is not finished after these
        writes: it is recorded instead of success, and ``apply_post`` waits
        for the last wave. ``document``: the current document, read by the
        caller just before (saves reading it again).
        """
        started = time.monotonic()
        progress = reporter(progress)
        progress.phase("validating", f"validating {barclamp}/{name}")
        proposal = document if document is not None else self.store.get(barclamp, name)
        existing = self._precheck(proposal)
        config_known = proposal.config_role in existing
        applied, config = self.store.applied(barclamp, name) if config_known else (None, None)
        status_ok = proposal.deployment.get("crowbar-status") == "success" and not proposal.queued
        involved = set(proposal.nodes()) | set(applied.nodes() if applied else [])
        if dry_run:
            result = self._dry_run(proposal, sorted(involved), config)
        elif (proposal.queued or queued or self.gate.dependency_blockers(proposal)) and (
                blocked := self.gate.blockers(proposal, self.reader.view(proposal.nodes()))):
            result = CommitResult(proposal.ref, proposal.revision, "blocked", reasons=blocked, document=proposal)
        elif only is not None:
            result = self._apply(proposal, sorted(involved & set(only)), config, existing, force=force,
                                 progress=progress, only=only, unfinished=unfinished)
        else:
            changed = changed_nodes(proposal, applied) if applied is not None and status_ok else None
            if changed is not None and len(changed) <= SMALL_CHANGE * max(1, len(involved)):
                result = self._small_commit(proposal, changed, involved, config, existing, force=force,
                                            progress=progress)
            else:
                result = self._apply(proposal, sorted(involved), config, existing, force=force, progress=progress)
        result.seconds = time.monotonic() - started
        result.was_queued = result.was_queued or proposal.queued
        return result

    def _dry_run(self, proposal: Proposal, involved: Iterable[str], config: dict[str, Any] | None) -> CommitResult:
        return dry_run(self.chef, self.validator, self.gate, self.elements, proposal, involved, config,
                       concurrency=self.concurrency)

    def _precheck(self, proposal: Proposal) -> set[str]:
        """Checks that need no lock and no role: bad input writes nothing. Returns the roles on the server."""
        errors = check_shape(proposal) or check_attributes(proposal)
        existing: set[str] = set()
        if not errors:
            existing = set(self.chef.roles.list())
            stub = ClusterView({n: MachineRecord(n, node_role_name(n), "", False, {}, {}, {}, False, 0, {})
                                for n in proposal.nodes() if node_role_name(n) in existing})
            errors = check_elements(proposal, stub)
        if errors:
            raise ValidationError(errors, subject=f"{proposal.barclamp}/{proposal.name}")
        return existing

    def _small_commit(self, proposal: Proposal, changed: set[str], involved: set[str], config: dict[str, Any] | None,
                      existing: set[str], *, force: bool, progress: Progress) -> CommitResult:
        """Plan from a snapshot of the machines involved; lock and write only what differs.

        A few machines are read from their roles, many by search (which may
        lag: a machine it shows out of date is written, or found unchanged
        under the locks).
        """
        cluster = self.reader.view(involved)
        wanted = desired(proposal)
        targets = set(changed)
        for node in set(wanted.entries) | set(wanted.claims):
            record = cluster.get(node)
            if record is None or not wanted.satisfied(record):  # absent: the index may lag
                targets.add(node)
        key = proposal.ref.key
        targets.update(r.name for r in cluster if r.name not in wanted.entries and (
            any(e.owner == key for e in r.entries.values()) or key in r.claims.values() or key in r.pending))
        config_current = (config is not None and comparable_role(config) == comparable_role(wanted.config)
                          and not config_role_drifted(config, proposal.barclamp))
        if not targets and config_current and not self.elements.outdated(proposal.definition, existing):
            # A success status may be older than the config role (an edit keeps it): a commit killed
            # after its config role write, before its post-commit work (addresses freed, apply_post),
            # left its resumable lock item behind (no other command's clean-up removes it; `locks
            # sweep` notes the interruption in the document first). Then the commit runs in full,
            # taking the dead one's lock over.
            if self.locks.inspect(proposal_lock_name(proposal.barclamp, proposal.name)) is None:
                return CommitResult(proposal.ref, proposal.revision, "unchanged", document=proposal)
            return self._apply(proposal, sorted(involved), config, existing, force=force, progress=progress)
        return self._apply(proposal, sorted(targets), config, existing, force=force, progress=progress)

    def _apply(self, proposal: Proposal, targets: list[str], config: dict[str, Any] | None, existing: set[str], *,
               force: bool, progress: Reporter, only: Collection[str] | None = None,
               unfinished: str | None = None) -> CommitResult:
        """Under the proposal's lock and the targets' shard locks: read, check, write.

        ``existing``: the roles listed before the locks (element roles not
        among them are created without being read first).
        """
        ref = proposal.ref
        progress.phase("locking", f"locking {ref} and {len(targets)} machine(s)")
        # Resumable: until the commit ends, its lock item is what says it is unfinished (see _small_commit).
        with self.locks.hold(proposal_lock_name(ref.barclamp, ref.name),
                             f"commit {ref} r{proposal.revision}", resumable=True) as lock:
            current = self.store.get(ref.barclamp, ref.name)
            if current.data != proposal.data:  # edited or committed meanwhile: commit what is there now
                applied, config = self.store.applied(ref.barclamp, ref.name)
                targets = sorted(set(current.nodes()) | set(applied.nodes() if applied else []))
                if only is not None:
                    targets = sorted(set(targets) & set(only))
            proposal = current
            was_queued = current.queued
            reporting = progress
            progress = counted = _Counted(progress)
            with _recording_interruption(self.store, proposal, counted, len(targets), "commit"), \
                    self.roles.locked(targets, f"commit {ref} r{proposal.revision}") as held:
                reporting.phase("validating", f"validating {ref} against {len(targets)} machine(s)")
                direct = len(targets) <= DIRECT_READ_LIMIT  # few machines: read them all
                # The addresses its machines need ride on the roles' own writes.
                folded = (CommitAddresses(self.services.addresses, proposal, recovering=lambda: (
                              self.roles.locks.took_over_any(lock.name for lock in held.locks)))
                          if self.services.addresses is not None and unfinished is None else None)
                try:
                    # The snapshot is taken under the locks; read directly, it only covers the others.
                    others = set(proposal.nodes()) - set(targets)
                    snapshot = (self.reader.view() if not direct else self.reader.view(others) if others else None)
                    if direct or snapshot is None:
                        outcome = Speculation()
                    else:
                        reporting.phase("writing", total=len(targets))
                        outcome = self.writer.speculate(proposal, targets, snapshot, held, lock, config, existing,
                                                        force=force, progress=progress, addresses=folded)
                    written = outcome.written
                    blocked: list[str] = []
                    if written is None:
                        try:
                            roles = {n: r for n, r in held.fetch().items() if r is not None}
                            fresh = {n: record_from_role(r) for n, r in roles.items()}
                            # After a mismatch the snapshot is not trusted for any machine.
                            records = {**({r.name: r for r in snapshot} if snapshot is not None and not outcome.stale
                                          else {}),
                                       **{n: r for n, r in fresh.items() if r is not None}}
                            view = ClusterView(records)
                            self.validator.validate(proposal, cluster=view)
                            blocked = self.gate.blockers(proposal, view)
                            if blocked and outcome.stale:
                                self.writer.undo(proposal, outcome, held, folded)
                            if not blocked:
                                if not outcome.stale:
                                    reporting.phase("writing", total=len(targets))
                                written = self.writer.write(proposal, roles, fresh, held, lock, config, existing,
                                                            force=force, prepared=outcome.stale, progress=progress,
                                                            addresses=folded)
                                written.machines += len(outcome.originals)
                        except (ValidationError, DriftError):
                            if outcome.stale:  # refused after all: undo what the speculative pass wrote
                                self.writer.undo(proposal, outcome, held, folded)
                            raise
                finally:
                    if folded:  # claimed ahead for machines no role took
                        folded.discard_unused()
            if blocked or written is None:
                return CommitResult(ref, proposal.revision, "blocked", reasons=blocked, document=proposal)
            reporting.phase("finishing", f"finishing {ref}")
            if unfinished is not None:  # a wave of a rollout: not applied everywhere yet
                self.store.record_status(proposal, interrupted=unfinished)
                return CommitResult(ref, proposal.revision, "applied", machines_written=written.machines,
                                    drifted=written.overwritten, document=proposal, was_queued=was_queued)
            try:
                proposal.definition.apply_post(self.services.context(proposal.definition), None, proposal)
                if self.services.addresses is not None:  # the networks its elements need
                    refused = allocate_for_commit(self.services.addresses, proposal, targets, folded)
                    if refused:
                        raise CrowbarError(f"{len(refused)} machine(s) got no address: " + "; ".join(refused[:5]))
            except CrowbarError as exc:
                self.store.record_status(proposal, failed=str(exc))
                raise
            self.store.record_status(proposal)
        repaired = self.run_lists.check(proposal.nodes())
        return CommitResult(ref, proposal.revision, "applied", machines_written=written.machines,
                            repaired_nodes=repaired, drifted=written.overwritten, document=proposal,
                            was_queued=was_queued)

    def deactivate(self, barclamp: str, name: str, *, progress: Progress | Reporter = None) -> CommitResult:
        """Remove everything a committed proposal put on machines, then its config role."""
        started = time.monotonic()
        progress = reporter(progress)
        progress.phase("validating", f"finding the machines of {barclamp}/{name}")
        proposal = self.store.get(barclamp, name)
        key = proposal.ref.key
        applied = self.store.applied(barclamp, name)[0]
        # Search may not show roles written a moment ago: the machines of the
        # document and of the applied revision are always looked at.
        holders = {r.name for r in self.reader.view() if any(e.owner == key for e in r.entries.values())
                   or key in r.claims.values() or key in r.pending}
        holders |= set(proposal.nodes()) | set(applied.nodes() if applied else ())
        progress.phase("locking", f"locking {proposal.ref} and {len(holders)} machine(s)")
        with self.locks.hold(proposal_lock_name(barclamp, name), f"deactivate {proposal.ref}") as lock:
            proposal = self.store.get(barclamp, name)  # under the lock: the one an interruption records in
            counted = _Counted(progress)
            with _recording_interruption(self.store, proposal, counted, len(holders), "deactivate"):
                with self.roles.locked(holders, f"deactivate {proposal.ref}") as held:
                    progress.phase("validating", f"reading the roles of {len(holders)} machine(s)")
                    roles = {n: r for n, r in held.fetch().items() if r is not None}
                    changed = {node: role for node, role in roles.items() if removal(key, node)(role)}
                    self.locks.ensure_valid(lock)
                    progress.phase("writing", total=len(changed))
                    written = held.write(changed, progress=counted)
                self.locks.ensure_valid(lock)
                progress.phase("finishing", f"deleting role {proposal.config_role}")
                if self.services.addresses is not None:
                    release_for_deactivate(self.services.addresses, proposal, holders)
                try:
                    self.chef.roles.delete(proposal.config_role)
                except NotFound:
                    pass

            def clear(current: Proposal) -> None:
                for status in STATUS_KEYS:
                    current.deployment.pop(status, None)

            # Read again under the lock: an edit saved since the read above is kept.
            proposal = self.store.modify(barclamp, name, clear, purpose=f"deactivate {proposal.ref}")
        return CommitResult(proposal.ref, proposal.revision, "deactivated", machines_written=len(written),
                            seconds=time.monotonic() - started, document=proposal)


class _Counted:
    """A progress callback that also counts the machines written."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0
        self._guard = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._guard:
            self.done += count
        if self.progress is not None:
            self.progress(count)


@contextlib.contextmanager
def _recording_interruption(store: ProposalStore, proposal: Proposal, counted: _Counted, machines: int,
                            action: str) -> Iterator[None]:
    """Writes that stop at a boundary on SIGINT/SIGTERM, recording in the document how far they got."""
    try:
        with stopping.protected():
            yield
    except Interrupted as exc:
        what = (f"{action} of {proposal.ref} r{proposal.revision} stopped ({exc.signal}) after {counted.done} "
                f"of {machines} machine(s) were written; {action} again to finish it")
        store.record_status(proposal, interrupted=what)
        raise Interrupted(what, signal=exc.signal) from None
