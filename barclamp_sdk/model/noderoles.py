"""The per-node role ``crowbar-<node>``: its shape, and safe bulk updates.

The role is mastered by the server (chef-client never writes roles), so it
is where Crowbar keeps everything it owns about a machine::

    default_attributes.crowbar = {
        "node": "d52-54-00-00-00-01.example.com",
        "state": "ready", "state_change_time": "...", "allocated": true,
        "crowbar-revision": 7,                      # bumped on every write
        "crowbar-fingerprint": "...",               # what we last wrote
        "run_list_map": {"nova-multi-compute-kvm": {"priority": 97,
                          "states": ["readying", "ready", "applying"],
                          "proposal": "nova-default"}, ...},
        "pending": {"nova-default": ["nova-multi-compute-kvm"]},
        "claimed_disks": {"sdb": "ceph-default"},
        "hardware": {"bios_set": "Virtualization", "raid_set": "..."},
        "bmc": {"address": "...", "certificate_sha256": "...", ...},  # confirmed: barclamp_sdk.model.bmctrust
    }
    run_list = the run_list_map entries active in the current state, by priority

``override_attributes`` belong to Chef admins: the library never writes them
and drift detection ignores them.

:class:`NodeRoleStore` updates many roles at once: machines are locked by
shard (:data:`~barclamp_sdk.model.naming.MACHINE_LOCK_SHARDS` lock items at most,
whatever the number of machines), each role is read from the object endpoint
under its shard's lock, changed, and written back only if it changed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import Conflict, CrowbarError, NotFound
from barclamp_sdk.model.jsondoc import fingerprint, now_iso
from barclamp_sdk.model.locks import Lock, LockManager
from barclamp_sdk.model.naming import check_role_owner, machine_lock_name, machine_shard, node_role_name
from barclamp_sdk.model.parallel import run_parallel

log = logging.getLogger(__name__)

REVISION = "crowbar-revision"
FINGERPRINT = "crowbar-fingerprint"
DRIFT = "crowbar-drift"
#: ``crowbar.node_attributes``: proposal key -> the per-machine settings it wrote into the role.
NODE_ATTRIBUTES = "node_attributes"

#: A change to one role: edit ``role`` in place; return True if it changed.
Mutation = Callable[[dict[str, Any]], bool]


def new_node_role(node: str, state: str) -> dict[str, Any]:
    """A fresh ``crowbar-<node>`` role for a newly discovered machine."""
    role = {
        "name": node_role_name(node),
        "json_class": "Chef::Role",
        "chef_type": "role",
        "description": f"Crowbar data for {node} (barclamp-sdk; see docs/chef-admin.md)",
        "default_attributes": {
            "crowbar": {
                "node": node,
                "state": state,
                "state_change_time": now_iso(),
                "allocated": False,
                REVISION: 0,
                "run_list_map": {},
                "pending": {},
                "claimed_disks": {},
                "hardware": {},
                "network": {},
            }
        },
        "override_attributes": {},
        "run_list": [],
        "env_run_lists": {},
    }
    seal(role)
    return role


def comparable_role(role: Mapping[str, Any]) -> dict[str, Any]:
    """A role minus what the server adds and our own fingerprints (to compare two roles)."""
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


def crowbar_data(role: dict[str, Any]) -> dict[str, Any]:
    """``default_attributes.crowbar`` of a node role (created if absent)."""
    attributes = role.setdefault("default_attributes", {})
    data = attributes.get("crowbar")
    if not isinstance(data, dict):
        data = attributes["crowbar"] = {}
    return data


def active_run_list(data: Mapping[str, Any]) -> list[str]:
    """The run list for the machine's current state, ordered by priority."""
    state = data.get("state")
    entries = []
    for role, spec in (data.get("run_list_map") or {}).items():
        states = spec.get("states") or ["all"]
        if "all" in states or state in states:
            entries.append((int(spec.get("priority", 1000)), role))
    return [f"role[{role}]" for _, role in sorted(entries)]


def role_fingerprint(role: Mapping[str, Any]) -> str:
    """Hash of everything the library manages in a node role."""
    data = dict((role.get("default_attributes") or {}).get("crowbar") or {})
    data.pop(FINGERPRINT, None)
    attributes = dict(role.get("default_attributes") or {})
    attributes["crowbar"] = data
    return fingerprint({
        "run_list": role.get("run_list") or [],
        "default_attributes": attributes,
        "env_run_lists": role.get("env_run_lists") or {},
    })


def drifted(role: Mapping[str, Any]) -> bool:
    """True when someone else changed the role since the library wrote it."""
    data = (role.get("default_attributes") or {}).get("crowbar") or {}
    if data.get(DRIFT):
        return True
    stored = data.get(FINGERPRINT)
    return stored is not None and stored != role_fingerprint(role)


def seal(role: dict[str, Any]) -> None:
    """Rebuild the run list and record the fingerprint (before every write)."""
    data = crowbar_data(role)
    role["run_list"] = active_run_list(data)
    data[FINGERPRINT] = role_fingerprint(role)


@dataclass
class UpdateReport:
    """What a bulk update did, machine by machine."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    failed: dict[str, CrowbarError] = field(default_factory=dict)

    def merge(self, other: UpdateReport) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.missing += other.missing
        self.drifted += other.drifted
        self.failed.update(other.failed)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.drifted or self.failed)


class LockedRoles:
    """Roles of a set of machines, their shard locks held (see :meth:`NodeRoleStore.locked`).

    Read them all, decide, then write the ones that changed: each role is
    read once from its object endpoint and written at most once.
    """

    def __init__(self, store: NodeRoleStore, nodes: list[str], locks: list[Lock]) -> None:
        self.store = store
        self.nodes = nodes
        self.locks = locks

    def fetch(self) -> dict[str, dict[str, Any] | None]:
        """Every role, read from its object endpoint (None: not a machine)."""
        roles = run_parallel(self.read, self.nodes, workers=self.store.concurrency, name="roles")
        return dict(zip(self.nodes, roles))

    def read(self, node: str) -> dict[str, Any] | None:
        """One role, from its object endpoint (None: not a machine)."""
        return self.store.chef.roles.find(node_role_name(node))

    def put(self, node: str, role: dict[str, Any]) -> None:
        """Write one changed role (revision bumped, sealed), the locks checked first."""
        self.store.write(node, role, self.locks)

    def write(self, roles: Mapping[str, dict[str, Any]], *,
              progress: Callable[[int], None] | None = None) -> list[str]:
        """Write changed roles (revision bumped, run list rebuilt, sealed)."""
        def put(node: str) -> str:
            self.put(node, roles[node])
            if progress is not None:
                progress(1)
            return node

        return run_parallel(put, sorted(roles), workers=self.store.concurrency, name="roles")

    def restore(self, originals: Mapping[str, dict[str, Any]]) -> None:
        """Put roles back exactly as they were read (undoing writes, the locks still held)."""
        chef = self.store.chef
        run_parallel(lambda node: chef.roles.update(node_role_name(node), originals[node]), sorted(originals),
                     workers=self.store.concurrency, name="roles", stop_on_error=False)


class NodeRoleStore:
    """Reads and writes ``crowbar-<node>`` roles under shard locks."""

    def __init__(self, chef: ChefClient, locks: LockManager, *, concurrency: int = 8) -> None:
        self.chef = chef
        self.locks = locks
        self.concurrency = concurrency

    def get(self, node: str) -> dict[str, Any]:
        """The role of machine ``node`` (NotFound if it is not a machine)."""
        return self.chef.roles.get(node_role_name(node))

    def find(self, node: str) -> dict[str, Any] | None:
        return self.chef.roles.find(node_role_name(node))

    def create(self, node: str, state: str) -> tuple[dict[str, Any], bool]:
        """Create the role of a new machine; (role, created)."""
        role = new_node_role(node, state)
        try:
            self.chef.roles.create(role)
            return role, True
        except Conflict:
            return self.get(node), False

    def write(self, node: str, role: dict[str, Any], locks: Iterable[Lock]) -> None:
        """Write a changed role: revision bumped, sealed, sent once ``locks`` are checked still ours."""
        for lock in locks:
            self.locks.ensure_valid(lock)
        data = crowbar_data(role)
        data[REVISION] = int(data.get(REVISION, 0)) + 1
        seal(role)
        self.chef.roles.update(node_role_name(node), role)

    @contextlib.contextmanager
    def locked(self, nodes: Iterable[str], purpose: str) -> Iterator[LockedRoles]:
        """Hold the shard locks of ``nodes`` (taken in order) for a bulk change."""
        names = sorted(set(nodes))
        shards = sorted({machine_lock_name(machine_shard(n)) for n in names})
        with self.locks.holding(shards, purpose) as held:
            yield LockedRoles(self, names, held)

    def update(
        self,
        mutations: Mapping[str, Mutation],
        *,
        purpose: str,
        on_drift: str = "mark",
        progress: Callable[[int], None] | None = None,
        adopting: bool = False,
    ) -> UpdateReport:
        """Apply ``mutations`` (node -> change) under shard locks.

        ``on_drift`` says what to do with a role changed by hand since we
        wrote it: ``"skip"`` (leave it, report it), ``"overwrite"`` (write,
        clearing the drift mark) or ``"mark"`` (write, keeping a drift mark
        so the next commit reports it). ``adopting``: the roles are not the
        machines' yet (a Crowbar 1.x role taken over), so their owner is not checked.
        """
        shards: dict[int, list[str]] = defaultdict(list)
        for node in mutations:
            shards[machine_shard(node)].append(node)
        if not shards:
            return UpdateReport()

        def run_shard(shard: int) -> UpdateReport:
            part = UpdateReport()
            with self.locks.hold(machine_lock_name(shard), purpose) as lock:
                for node in sorted(shards[shard]):
                    self._update_one(node, mutations[node], part, on_drift, lock, purpose, adopting)
                    if progress is not None:
                        progress(1)
            return part

        return self._merged(run_shard, sorted(shards))

    def update_held(self, held: LockedRoles, roles: Mapping[str, dict[str, Any] | None],
                    mutations: Mapping[str, Mutation], *, purpose: str, on_drift: str = "mark",
                    progress: Callable[[int], None] | None = None) -> UpdateReport:
        """Apply ``mutations`` to ``roles`` read under ``held`` (:meth:`locked`; None: not a
        machine), as :meth:`update` does, many at once: for a change that must see every
        role before it changes any (an allocation picking addresses in machine order)."""
        def one(node: str) -> UpdateReport:
            part = UpdateReport()
            role = roles.get(node)
            if role is None:
                part.missing.append(node)
            else:
                self._apply_one(node, role, mutations[node], part, on_drift, held.locks, purpose)
            if progress is not None:
                progress(1)
            return part

        return self._merged(one, sorted(mutations))

    def _merged(self, each: Callable[[Any], UpdateReport], items: list[Any]) -> UpdateReport:
        """One report of ``each`` run over ``items`` in parallel."""
        report = UpdateReport()
        for part in run_parallel(each, items, workers=self.concurrency, name="roles"):
            report.merge(part)
        return report

    def _update_one(self, node: str, mutate: Mutation, report: UpdateReport,
                    on_drift: str, lock: Any, purpose: str, adopting: bool = False) -> None:
        name = node_role_name(node)
        try:
            role = self.chef.roles.get(name)
        except NotFound:
            report.missing.append(node)
            return
        self._apply_one(node, role, mutate, report, on_drift, [lock], purpose, adopting)

    def _apply_one(self, node: str, role: dict[str, Any], mutate: Mutation, report: UpdateReport,
                   on_drift: str, locks: Iterable[Lock], purpose: str, adopting: bool = False) -> None:
        try:
            if not adopting:
                check_role_owner(node, role)  # another node's role (names differing in '.'/'_')
        except CrowbarError as exc:
            report.failed[node] = exc
            return
        was_drifted = drifted(role)
        if was_drifted and on_drift == "skip":
            report.drifted.append(node)
            return
        try:
            changed = mutate(role)
        except CrowbarError as exc:
            report.failed[node] = exc
            return
        data = crowbar_data(role)
        if was_drifted:
            if on_drift == "overwrite":
                changed = True  # rewrite what we manage, dropping the hand edit
                data.pop(DRIFT, None)
            elif DRIFT not in data:
                data[DRIFT] = {"detected_at": now_iso(), "during": purpose}
                changed = True
            report.drifted.append(node)
        if not changed:
            report.unchanged.append(node)
            return
        self.write(node, role, locks)
        report.written.append(node)
