"""Many machines changing state at once: one role read and write each, one lock per shard.

A boot storm is thousands of small transitions. Taken one by one, each
costs a shard lock (a create and a delete) on top of the role's read and
write, twice the floor by itself. :func:`write_states` changes many
machines' states through :meth:`NodeRoleStore.update`: machines grouped by
shard, each shard's lock taken once and held (renewed by the lock manager)
while its machines' roles are read and written, shards in parallel. A
transition of one machine is the same call with one machine in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.errors import CrowbarError, NotFoundError
from barclamp_sdk.model.cluster import MachineRecord, record_from_role
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.noderoles import NodeRoleStore, crowbar_data
from barclamp_sdk.model.states import check_transition


@dataclass
class TransitionReport:
    """What a batch of transitions did: each moved machine's record, or why it did not move."""

    #: Machine -> its record after the transition (and after the barclamps' hooks).
    records: dict[str, MachineRecord] = field(default_factory=dict)
    #: Machine -> the error that kept it where it was (an invalid transition, no such machine ...).
    failed: dict[str, CrowbarError] = field(default_factory=dict)


def apply_state(name: str, role: dict[str, Any], state: str) -> bool:
    """Move the machine of ``role`` to ``state`` in place (InvalidTransition if not allowed); True if it changed."""
    data = crowbar_data(role)
    current = str(data.get("state", ""))
    check_transition(name, current, state, allocated=bool(data.get("allocated")))
    if current == state:
        return False
    data["state"] = state
    data["state_change_time"] = now_iso()
    if state == "problem":
        data.setdefault("problem", {})
    elif current == "problem":
        data.pop("problem", None)
    return True


def write_states(roles: NodeRoleStore, changes: Mapping[str, str]) -> TransitionReport:
    """Write machine -> state for every machine of ``changes``: one role GET and at most one PUT each."""
    report = TransitionReport()
    if not changes:
        return report
    seen: dict[str, dict[str, Any]] = {}

    def change(name: str) -> Any:
        def mutate(role: dict[str, Any]) -> bool:
            moved = apply_state(name, role, changes[name])
            seen[name] = role
            return moved
        return mutate

    states = sorted(set(changes.values()))
    purpose = (f"transition {next(iter(changes))} to {states[0]}" if len(changes) == 1
               else f"transition {len(changes)} machines to {', '.join(states)}")
    update = roles.update({name: change(name) for name in changes}, purpose=purpose)
    for name in update.missing:
        report.failed[name] = NotFoundError(f"no machine {name!r}; a machine starts with the state discovering")
    report.failed.update(update.failed)
    for name, role in seen.items():
        record = record_from_role(role)
        if record is not None and name not in report.failed:
            report.records[name] = record
    return report
