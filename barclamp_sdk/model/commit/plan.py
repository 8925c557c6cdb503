"""Planning a commit, pure: what a proposal wants on each machine and in its config role.

Nothing here reads or writes the Chef server: given documents and records,
these functions say which roles change, how, and in which batch of
``element_order``; the unit tests run them without a server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.model.cluster import Entry, MachineRecord
from barclamp_sdk.model.jsondoc import canonical_json, fingerprint
from barclamp_sdk.model.noderoles import DRIFT, FINGERPRINT, NODE_ATTRIBUTES, crowbar_data
from barclamp_sdk.model.parts import split
from barclamp_sdk.model.proposal import STATUS_KEYS, Proposal
from barclamp_sdk.model.spec import BarclampSpec

#: Changed on at most this share of its machines, a commit plans by search.
SMALL_CHANGE = 0.3


def config_role(proposal: Proposal) -> dict[str, Any]:
    """The role a committed proposal becomes (attributes default, deployment override), as stored."""
    return config_role_parts(proposal)[0]


def config_role_parts(proposal: Proposal) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The config role as stored (large containers replaced by references) and its parts."""
    deployment = {k: copy.deepcopy(v) for k, v in proposal.deployment.items()
                  if k not in STATUS_KEYS and k != ROLLOUT}  # the rollout plan is not for recipes
    role = {
        "name": proposal.config_role,
        "json_class": "Chef::Role",
        "chef_type": "role",
        "description": f"Committed proposal {proposal.barclamp}/{proposal.name} (barclamp-sdk)",
        "default_attributes": {proposal.barclamp: {k: copy.deepcopy(v) for k, v in proposal.attributes.items()
                                                   if k not in proposal.definition.node_attributes}},
        "override_attributes": {proposal.barclamp: deployment},
        "run_list": [],
        "env_run_lists": {},
    }
    role, parts = split(role, proposal.id)
    role["override_attributes"][proposal.barclamp][FINGERPRINT] = _config_fingerprint(role, proposal.barclamp)
    return role, parts


def _config_fingerprint(role: Mapping[str, Any], barclamp: str) -> str:
    body = copy.deepcopy(dict(role))
    body.pop("description", None)
    body.get("override_attributes", {}).get(barclamp, {}).pop(FINGERPRINT, None)
    for key in ("json_class", "chef_type"):
        body.pop(key, None)
    return fingerprint(body)


def config_role_drifted(role: Mapping[str, Any], barclamp: str) -> bool:
    """Whether a config role was edited by hand since it was written."""
    stored = (role.get("override_attributes") or {}).get(barclamp, {}).get(FINGERPRINT)
    return stored is not None and stored != _config_fingerprint(role, barclamp)


@dataclass
class MachinePlan:
    """What a proposal wants on one machine."""

    node: str
    entries: dict[str, dict[str, Any]]
    claims: dict[str, str]
    batch: int
    #: Per-machine settings (:attr:`Barclamp.node_attributes`) for this machine's role.
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Desired:
    """What a proposal wants on all its machines, and in its config role."""

    proposal: Proposal
    entries: dict[str, dict[str, dict[str, Any]]]
    claims: dict[str, dict[str, str]]
    config: dict[str, Any]
    #: Parts the stored config role names (see :mod:`~barclamp_sdk.model.parts`), written before it.
    config_parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per machine: its per-machine settings (:attr:`Barclamp.node_attributes`).
    node_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def plan_for(self, node: str, current: MachineRecord | None) -> MachinePlan:
        want = self.entries.get(node, {})
        have = {r: e for r, e in (current.entries if current else {}).items() if e.owner == self.proposal.ref.key}
        changed = set(want) ^ set(have) | {r for r in want if r in have and _entry(want[r]) != have[r]}
        return MachinePlan(node, want, self.claims.get(node, {}), batch_of(self.proposal.definition, changed),
                           self.node_attributes.get(node, {}))

    def satisfied(self, record: MachineRecord) -> bool:
        """Whether a machine's role already holds exactly what is wanted."""
        key = self.proposal.ref.key
        want = self.entries.get(record.name, {})
        have = {r: e for r, e in record.entries.items() if e.owner == key}
        return ({r: _entry(s) for r, s in want.items()} == have
                and self.claims.get(record.name, {}) == {d: o for d, o in record.claims.items() if o == key}
                and key not in record.pending and (record.allocated or not want) and not record.drifted
                and self.node_attributes.get(record.name, {}) == record.node_attributes.get(key, {}))

    def batches(self, plans: Mapping[str, MachinePlan]) -> dict[int, list[str]]:
        """Machines by the batch of ``element_order`` their changes belong to."""
        batches: dict[int, list[str]] = {}
        for node in sorted(plans):
            batches.setdefault(plans[node].batch, []).append(node)
        return batches


def desired(proposal: Proposal) -> Desired:
    """Everything ``proposal`` wants: run-list entries and disk claims per machine, its config role."""
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
    per_node: dict[str, dict[str, Any]] = {}
    for setting in definition.node_attributes:
        values = proposal.attributes.get(setting)
        for node, value in (values.items() if isinstance(values, dict) else ()):
            if node in entries:
                per_node.setdefault(node, {})[setting] = copy.deepcopy(value)
    config, parts = config_role_parts(proposal)
    return Desired(proposal, entries, claims, config, parts, per_node)


def changed_nodes(proposal: Proposal, applied: Proposal) -> set[str]:
    """Machines whose entries or claims differ between two revisions."""
    now, then = desired(proposal), desired(applied)
    nodes = set(now.entries) | set(then.entries) | set(now.claims) | set(then.claims)
    return {n for n in nodes if now.entries.get(n) != then.entries.get(n) or now.claims.get(n) != then.claims.get(n)
            or now.node_attributes.get(n) != then.node_attributes.get(n)}


def _entry(spec: Mapping[str, Any]) -> Entry:
    return Entry(spec["proposal"], spec["priority"], tuple(spec["states"]))


def batch_of(definition: BarclampSpec, roles: set[str]) -> int:
    """The first batch of ``element_order`` holding one of ``roles`` (0 if none)."""
    for index, batch in enumerate(definition.batches()):
        if roles & set(batch):
            return index
    return 0


def machine_mutation(key: str, plan: MachinePlan) -> Callable[[dict[str, Any]], bool]:
    """Edit a machine's role to hold exactly what ``plan`` wants of proposal ``key``."""
    def mutate(role: dict[str, Any]) -> bool:
        data = crowbar_data(role)
        run_list_map = data.setdefault("run_list_map", {})
        before = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"), data.get("allocated"),
                                 role.get("default_attributes")])
        node_settings(key, plan, role)
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
        after = canonical_json([run_list_map, data.get("claimed_disks"), data.get("pending"), data.get("allocated"),
                                role.get("default_attributes")])
        return before != after

    return mutate


def node_settings(key: str, plan: MachinePlan, role: dict[str, Any]) -> None:
    """Put ``plan``'s per-machine settings of proposal ``key`` in a machine's role (and take off old ones).

    Each is ``default_attributes.<barclamp>.<setting>.<node>`` (where Chef's
    merge gives the node's recipes ``node[barclamp][setting][node.name]``);
    ``crowbar.node_attributes.<key>`` lists the settings ``key`` wrote.
    """
    data = crowbar_data(role)
    attributes = role["default_attributes"]
    barclamp = key.split("-")[0]  # a key is <barclamp>-<name>; barclamp names have no "-"
    owned = data.get(NODE_ATTRIBUTES) or {}
    for setting in set(owned.get(key) or ()) - set(plan.attributes):
        values = (attributes.get(barclamp) or {}).get(setting)
        if isinstance(values, dict):
            values.pop(plan.node, None)
            if not values:
                del attributes[barclamp][setting]
        if barclamp in attributes and not attributes[barclamp]:
            del attributes[barclamp]
    for setting, value in plan.attributes.items():
        attributes.setdefault(barclamp, {}).setdefault(setting, {})[plan.node] = copy.deepcopy(value)
    if plan.attributes:
        data.setdefault(NODE_ATTRIBUTES, {})[key] = sorted(plan.attributes)
    elif key in owned:
        del data[NODE_ATTRIBUTES][key]
        if not data[NODE_ATTRIBUTES]:
            del data[NODE_ATTRIBUTES]


def change_role(key: str, plan: MachinePlan, role: dict[str, Any], *, drifted: bool) -> bool:
    """Apply ``plan`` to a machine's role; True if it changed.

    A drifted role (edited by hand, overwritten with --force) is always
    rewritten, its drift mark dropped.
    """
    changed = machine_mutation(key, plan)(role)
    if drifted:
        crowbar_data(role).pop(DRIFT, None)
        changed = True
    return changed


def removal(key: str, node: str) -> Callable[[dict[str, Any]], bool]:
    """Take everything of proposal ``key`` off a machine's role (deactivation)."""
    return machine_mutation(key, MachinePlan(node, {}, {}, 0))


# -- waves ---------------------------------------------------------------------------------

#: The key of a proposal's rollout plan in its deployment (reviewed with the proposal).
ROLLOUT = "rollout"


@dataclass(frozen=True)
class RolloutPlan:
    """How to roll a commit out: ``wave`` machines at a time, stopping once ``max_failures``
    machines failed their chef-client run or did not report one within ``timeout`` seconds."""

    wave: int
    max_failures: int = 1
    timeout: float = 3600.0

    def as_dict(self) -> dict[str, Any]:
        return {"wave": self.wave, "max_failures": self.max_failures, "timeout": self.timeout}


def rollout_plan(proposal: Proposal, *, wave: int | None = None, max_failures: int | None = None,
                 timeout: float | None = None) -> RolloutPlan | None:
    """The rollout plan: the options given over the document's ``rollout`` block, else the plan of
    a rollout of this revision that did not finish (committing again resumes it); None: all at once."""
    block = proposal.deployment.get(ROLLOUT) or {}
    record = proposal.deployment.get("crowbar-rollout")
    if (not block and isinstance(record, dict) and record.get("status") in ("running", "stopped")
            and record.get("revision") == proposal.revision and isinstance(record.get("plan"), dict)):
        block = record["plan"]
    size = wave if wave is not None else block.get("wave")
    if size is None:
        if max_failures is not None or timeout is not None:
            raise ValidationError("--max-failures and --timeout need --wave SIZE (or a rollout block with wave)")
        return None
    plan = RolloutPlan(int(size), int(max_failures if max_failures is not None else block.get("max_failures", 1)),
                       float(timeout if timeout is not None else block.get("timeout", 3600.0)))
    if plan.wave < 1 or plan.max_failures < 1 or plan.timeout <= 0:
        raise ValidationError(f"a rollout needs wave >= 1, max_failures >= 1 and timeout > 0, not {plan.as_dict()}")
    return plan


@dataclass(frozen=True)
class Wave:
    """Machines written (and waited for) together: all of one batch of ``element_order``."""

    number: int  # 1-based
    batch: int
    machines: tuple[str, ...]


def wave_batches(proposal: Proposal, applied: Proposal | None = None) -> dict[int, list[str]]:
    """Every machine of a commit by its batch of ``element_order``.

    A machine's batch is the first holding one of the elements it gets; a
    machine leaving the proposal goes with the elements it had.
    """
    definition = proposal.definition
    wanted = desired(proposal).entries
    before = desired(applied).entries if applied is not None else {}
    batches: dict[int, list[str]] = {}
    for node in sorted(set(wanted) | set(before)):
        roles = set(wanted.get(node) or before.get(node) or {})
        batches.setdefault(batch_of(definition, roles), []).append(node)
    return batches


def split_waves(batches: Mapping[int, list[str]], size: int) -> list[Wave]:
    """Waves of at most ``size`` machines, batch by batch in order; a wave never spans two batches."""
    if size < 1:
        raise ValidationError(f"a wave holds at least one machine, not {size}")
    waves: list[Wave] = []
    for batch in sorted(batches):
        machines = sorted(batches[batch])
        for start in range(0, len(machines), size):
            waves.append(Wave(len(waves) + 1, batch, tuple(machines[start:start + size])))
    return waves
