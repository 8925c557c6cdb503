"""Committing in waves: write the roles of a few machines, wait for their chef-client runs, go on.

A :class:`~barclamp_sdk.model.commit.plan.RolloutPlan` (``--wave SIZE
--max-failures K --timeout T``, or the proposal's ``rollout`` block) splits
the machines of a commit into waves of SIZE, batch by batch of
``element_order`` (a wave never spans two batches;
:func:`~barclamp_sdk.model.commit.plan.split_waves`). For each wave, under
the proposal's lock held for the whole rollout:

1. the committer writes the roles of the waves so far (those of earlier
   waves are unchanged: nothing is written for them), recording the
   proposal as not finished yet;
2. :class:`~barclamp_sdk.model.runs.RunWatcher` waits until each machine of
   the wave reports a chef-client run with its new role (node reads by
   name at a bounded rate; a machine silent for T seconds timed out);
3. the wave's outcome is recorded in the document (``crowbar-rollout``, a
   status key, beside ``crowbar-status``); failures and timeouts add up
   over the waves: while fewer than K machines failed it goes on, otherwise
   it stops, recording where and why (``crowbar-status: failed``).

After the last wave converged, a final pass (writing nothing) runs the
barclamp's ``apply_post`` and records success. Committing again resumes: a
wave recorded converged for the same revision and plan is skipped; the
others are written again (no change: no write) and waited for, and a machine
that ran successfully since needs no new run.
"""

from __future__ import annotations

import copy
from typing import Any

from barclamp_sdk.errors import Interrupted
from barclamp_sdk.model import stopping
from barclamp_sdk.model.commit.committer import Committer
from barclamp_sdk.model.commit.plan import RolloutPlan, Wave, split_waves, wave_batches
from barclamp_sdk.model.commit.result import CommitResult
from barclamp_sdk.model.locks import Lock, LockManager
from barclamp_sdk.model.naming import proposal_lock_name
from barclamp_sdk.model.noderoles import REVISION, NodeRoleStore, crowbar_data
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.progress import Reporter
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.runs import RunOutcome, RunWatcher
from barclamp_sdk.model.store import ProposalStore

#: The status key holding a rollout's waves.
RECORD = "crowbar-rollout"


class Rollout:
    """Commits a proposal in waves (see the module docstring)."""

    def __init__(self, committer: Committer, store: ProposalStore, roles: NodeRoleStore, locks: LockManager,
                 watcher: RunWatcher) -> None:
        self.committer = committer
        self.store = store
        self.roles = roles
        self.locks = locks
        self.watcher = watcher

    def commit(self, barclamp: str, name: str, plan: RolloutPlan, *, force: bool = False,
               progress: Reporter) -> CommitResult:
        """Roll the proposal out; status ``applied``, ``stopped`` (the failure budget is spent) or ``blocked``."""
        progress.phase("locking", f"locking {barclamp}/{name}")
        with self.locks.hold(proposal_lock_name(barclamp, name), f"commit {barclamp}/{name} in waves") as lock:
            proposal = self.store.get(barclamp, name)
            applied = self.store.applied(barclamp, name)[0]
            waves = split_waves(wave_batches(proposal, applied), plan.wave)
            record = _record(proposal, plan, waves)
            failures: dict[str, str] = {}
            written = 0
            seen: list[str] = []
            for wave in waves:
                seen += wave.machines
                entry = record["waves"][wave.number - 1]
                if entry["status"] == "converged":
                    continue  # converged before, for this revision and plan
                where = f"wave {wave.number} of {len(waves)}"
                result = self.committer.commit(
                    barclamp, name, force=force, progress=progress, only=set(seen),
                    unfinished=f"a rollout of {proposal.ref} r{proposal.revision} in waves of {plan.wave} "
                               f"stopped at {where}; commit again to resume it")
                if result.status != "applied":
                    return result  # blocked: nothing of this wave was written
                written += result.machines_written
                self.locks.update(lock, wave=wave.number, waves=len(waves), revision=proposal.revision)
                entry["status"] = "waiting"
                self._save(proposal, record)
                outcomes = self._wait(proposal, record, wave, len(waves), plan, lock, progress)
                bad = {o.node: f"{o.outcome}: {o.detail}" if o.detail else o.outcome
                       for o in outcomes.values() if not o.ok}
                failures.update(bad)
                entry["status"] = "failed" if bad else "converged"
                entry["failed"] = bad
                if len(failures) >= plan.max_failures:
                    why = (f"rollout of {proposal.ref} r{proposal.revision} stopped after {where}: "
                           f"{len(failures)} machine(s) failed (budget {plan.max_failures}): "
                           + "; ".join(f"{n} {w}" for n, w in sorted(failures.items())[:5])
                           + (" ..." if len(failures) > 5 else "")
                           + "; fix them and commit again to resume")
                    record.update(status="stopped", stopped=why)
                    self._save(proposal, record, failed=why)
                    return CommitResult(proposal.ref, proposal.revision, "stopped", reasons=[why],
                                        machines_written=written, document=proposal)
                self._save(proposal, record)
            progress.phase("finishing", f"finishing {proposal.ref}")
            result = self.committer.commit(barclamp, name, force=force, progress=progress)
            if result.status == "applied":
                record["status"] = "done"
                record["failed"] = failures
                self._save(proposal, record)
            result.machines_written += written
            return result

    def _wait(self, proposal: Proposal, record: dict[str, Any], wave: Wave, total: int, plan: RolloutPlan,
              lock: Lock, progress: Reporter) -> dict[str, RunOutcome]:
        """Each machine's run with its role as written now (its revision, read from the role)."""
        roles = run_parallel(self.roles.find, list(wave.machines), workers=self.roles.concurrency, name="roles")
        wanted = {node: int(crowbar_data(role).get(REVISION, 0)) for node, role in zip(wave.machines, roles)
                  if role is not None}

        def between(awaited: int) -> None:
            self.locks.ensure_valid(lock)
            progress.phase("waiting", f"waiting for wave {wave.number} of {total}: {awaited} of "
                                      f"{len(wave.machines)} machine(s) to run chef-client")

        between(len(wanted))
        try:
            with stopping.protected():
                return self.watcher.wait(wanted, plan.timeout, between=between)
        except Interrupted as exc:
            why = (f"a rollout of {proposal.ref} r{proposal.revision} stopped ({exc.signal}) while waiting for "
                   f"wave {wave.number} of {total}; commit again to resume it")
            self._save(proposal, record, interrupted=why)
            raise Interrupted(why, signal=exc.signal) from None

    def _save(self, proposal: Proposal, record: dict[str, Any], *, failed: str | None = None,
              interrupted: str | None = None) -> None:
        """Store the rollout record (and a failure) in the document, under the lock held."""
        def change(current: Proposal) -> None:
            current.deployment[RECORD] = copy.deepcopy(record)
            if failed or interrupted:
                current.deployment["crowbar-status"] = "failed" if failed else "interrupted"
                current.deployment["crowbar-failed"] = failed or interrupted

        self.store.modify(proposal.barclamp, proposal.name, change, purpose=f"commit {proposal.ref} in waves")


def _record(proposal: Proposal, plan: RolloutPlan, waves: list[Wave]) -> dict[str, Any]:
    """The rollout record to continue: the stored one for this revision and plan, else a fresh one."""
    stored = copy.deepcopy(proposal.deployment.get(RECORD))
    fresh = {"revision": proposal.revision, "plan": plan.as_dict(), "status": "running", "failed": {},
             "waves": [{"wave": w.number, "batch": w.batch, "machines": len(w.machines), "first": w.machines[0],
                        "status": "pending", "failed": {}} for w in waves]}
    if (isinstance(stored, dict) and stored.get("revision") == proposal.revision
            and stored.get("plan") == plan.as_dict()
            and [(w.get("wave"), w.get("machines"), w.get("first")) for w in stored.get("waves") or []]
            == [(w["wave"], w["machines"], w["first"]) for w in fresh["waves"]]):
        stored["status"] = "running"
        stored.pop("stopped", None)
        return stored
    return fresh
