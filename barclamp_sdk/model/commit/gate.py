"""Gating a commit: what keeps a proposal from being applied now (dependencies, machine states)."""

from __future__ import annotations

from barclamp_sdk.model.cluster import ClusterView
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import proposal_lock_name
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.store import ProposalStore


class Gate:
    """Says why a proposal cannot be applied now (reads only)."""

    def __init__(self, store: ProposalStore, locks: LockManager, services: HookServices,
                 reader: ClusterReader) -> None:
        self.store = store
        self.locks = locks
        self.services = services
        self.reader = reader

    def dependency_blockers(self, proposal: Proposal) -> list[str]:
        """Dependencies that are missing, queued, not applied or being applied."""
        reasons = []
        definition = proposal.definition
        for dep in definition.all_dependencies(proposal, self.services.context(definition)):
            other = self.store.find(dep.barclamp, dep.name)
            if other is None:
                reasons.append(f"depends on {dep}, which does not exist: create and commit it")
            elif other.queued:
                reasons.append(f"depends on {dep}, which is queued")
            elif not self.store.is_committed(other):
                reasons.append(f"depends on {dep}, which is not applied yet: commit it")
            else:
                lock = self.locks.inspect(proposal_lock_name(dep.barclamp, dep.name))
                if lock is not None and "commit" in str(lock.get("purpose")) and not self.locks.expired(lock):
                    reasons.append(f"depends on {dep}, which is being applied right now")
        return reasons

    def blockers(self, proposal: Proposal, cluster: ClusterView) -> list[str]:
        """Why the proposal cannot be applied now (empty when it can).

        ``cluster`` may come from search, which lags: a machine it shows not
        ready is read from its role before it blocks the commit (until one
        really does; the others are reported as the snapshot shows them).
        """
        reasons = self.dependency_blockers(proposal)
        waiting = []
        ready = set(proposal.definition.ready_states)
        confirmed = False
        for node in proposal.nodes():
            record = cluster.get(node)
            if record is None or record.state in ready:
                continue
            if not confirmed:
                record = self.reader.read([node]).get(node) or record
                if record.state in ready:
                    continue  # the snapshot was behind
                confirmed = True
            detail = record.state or "unknown state"
            if record.state == "discovered" and not record.allocated:
                detail += ", waiting for allocation"
            waiting.append(f"{node} ({detail})")
        if waiting:
            shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
            reasons.append(f"{len(waiting)} machine(s) not {'/'.join(sorted(ready))} yet: {shown}")
        return reasons
