"""A dry run: what a commit would write, role by role, reading what it would read and writing nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.model.cluster import ClusterView, record_from_role
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.plan import desired, machine_mutation
from barclamp_sdk.model.commit.result import CommitResult, RoleChange
from barclamp_sdk.model.element_roles import ElementRoles
from barclamp_sdk.model.jsondoc import diff
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.noderoles import active_run_list, comparable_role, crowbar_data, drifted
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.validation import Validator


def dry_run(chef: ChefClient, validator: Validator, gate: Gate, elements: ElementRoles, proposal: Proposal,
            involved: Iterable[str], config: dict[str, Any] | None, *, concurrency: int) -> CommitResult:
    """The exact role changes a commit of ``proposal`` would make now (status ``planned``)."""
    names = list(involved)
    roles = dict(zip(names, run_parallel(lambda n: chef.roles.find(node_role_name(n)), names,
                                         workers=concurrency, name="dry-run")))
    records = {n: record_from_role(r) for n, r in roles.items() if r is not None}
    view = ClusterView({n: r for n, r in records.items() if r is not None})
    validator.validate(proposal, cluster=view)
    wanted = desired(proposal)
    changes = [RoleChange(role["name"], "update" if exists else "create", run_list_after=role["run_list"])
               for role, exists in elements.outdated(proposal.definition)]
    if config is None or comparable_role(config) != comparable_role(wanted.config):
        change = RoleChange(proposal.config_role, "update" if config else "create")
        if config:
            change.changes = [str(c) for c in diff(comparable_role(config), comparable_role(wanted.config))]
        changes.append(change)
    key = proposal.ref.key
    drift = []
    for node in sorted(roles):
        role = roles[node]
        if role is None:
            continue
        after = copy.deepcopy(role)
        moved = machine_mutation(key, wanted.plan_for(node, records.get(node)))(after)
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
    return CommitResult(proposal.ref, proposal.revision, "planned", reasons=gate.blockers(proposal, view),
                        changes=changes, drifted=drift, document=proposal)
