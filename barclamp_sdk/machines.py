"""Machines: discovery, the pause for allocation, state transitions.

A Chef node (made by chef-client, Ohai data in its automatic attributes)
becomes a Crowbar machine when it is discovered: the library creates its
``crowbar-<node>`` role and adds ``role[crowbar-<node>]`` to the node's run
list. That run-list entry is the only write the library ever makes to a node;
it is re-checked, and repaired with a warning, whenever a commit touches the
machine. Everything else Crowbar knows about a machine lives in its role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from barclamp_sdk.chef.client import solr_escape
from barclamp_sdk.cluster import MATCH_ALL, ClusterView, MachineRecord, record_from_role
from barclamp_sdk.context import Context
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError, ValidationError
from barclamp_sdk.inventory import NODE_KEYS, ROLE_KEYS, Inventory, machine_from_search
from barclamp_sdk.naming import NODE_ROLE_PREFIX, check_node_name, check_role_owner, node_role_name
from barclamp_sdk.noderoles import NodeRoleStore, crowbar_data, now_iso
from barclamp_sdk.states import check_state, check_transition

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar

log = logging.getLogger(__name__)

#: Above this many names, read everything and filter instead of an OR query.
_OR_QUERY_LIMIT = 40


def _names_query(names: Iterable[str], field: str = "name") -> str:
    return " OR ".join(f"{field}:{solr_escape(n)}" for n in names)


class Machines:
    """Discover, allocate, transition and inspect machines."""

    def __init__(self, crowbar: Crowbar) -> None:
        self.crowbar = crowbar
        self.chef = crowbar.chef
        self.roles = NodeRoleStore(crowbar.chef, crowbar.locks, concurrency=crowbar.concurrency)

    # -- reading ---------------------------------------------------------------------

    def cluster(self) -> ClusterView:
        """A snapshot of every machine's Crowbar record."""
        return ClusterView.load(self.chef)

    def list(self) -> list[MachineRecord]:
        """Every machine, by name."""
        view = self.cluster()
        return [view.get(n) for n in view.names()]  # type: ignore[misc]

    def record(self, name: str) -> MachineRecord:
        """One machine's Crowbar record, read from its role."""
        check_node_name(name)
        role = self.chef.roles.find(node_role_name(name))
        record = record_from_role(role) if role else None
        if record is None or record.name != name:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        return record

    def state(self, name: str) -> str:
        """A machine's state ("" when it is not a machine yet)."""
        try:
            return self.record(name).state
        except NotFoundError:
            return ""

    def is_allocated(self, name: str) -> bool:
        return self.record(name).allocated

    def inventory(self, names: Iterable[str] | None = None) -> Inventory:
        """Typed facts of every machine (or of ``names``), by partial search."""
        wanted = None if names is None else sorted(set(names))
        use_or = wanted is not None and len(wanted) <= _OR_QUERY_LIMIT
        if wanted == []:
            return Inventory([])
        node_query = _names_query(wanted) if use_or else MATCH_ALL  # type: ignore[arg-type]
        role_query = (_names_query([node_role_name(n) for n in wanted]) if use_or  # type: ignore[union-attr]
                      else MATCH_ALL)
        roles: dict[str, dict[str, Any]] = {}
        for row in self.chef.partial_search("role", role_query, ROLE_KEYS):
            node = (row.get("crowbar") or {}).get("node")
            if isinstance(node, str) and str(row.get("role", "")).startswith(NODE_ROLE_PREFIX):
                roles[node] = row
        machines = []
        keep = set(wanted) if wanted is not None else None
        for row in self.chef.partial_search("node", node_query, NODE_KEYS):
            name = row.get("name")
            if name in roles and (keep is None or name in keep):
                machines.append(machine_from_search(row, roles[name]))
        return Inventory(machines)

    def show(self, name: str) -> dict[str, Any]:
        """Everything about one machine: facts, Crowbar record, run lists."""
        record = self.record(name)
        facts = self.inventory([name]).get(name)
        role = self.chef.roles.get(record.role)
        node = self.chef.nodes.find(name) or {}
        return {
            "name": name,
            "state": record.state,
            "allocated": record.allocated,
            "role": record.role,
            "run_list": role.get("run_list", []),
            "roles": sorted(record.entries),
            "pending": {k: list(v) for k, v in record.pending.items()},
            "claimed_disks": record.claims,
            "hardware": record.hardware,
            "drifted": record.drifted,
            "node_run_list": node.get("run_list", []),
            "facts": facts.model_dump(mode="json") if facts else None,
        }

    # -- discovery -----------------------------------------------------------------------

    def discover(self, names: Iterable[str] | None = None, *,
                 skipped: dict[str, str] | None = None) -> list[str]:
        """Make Chef nodes (all, or ``names``) Crowbar machines; returns the new ones.

        A node that cannot become a machine (a name no role can hold, or whose
        role belongs to another node: see :func:`~barclamp_sdk.naming.check_role_owner`)
        is skipped, its reason put in ``skipped`` (or logged as a warning); every other
        node is still discovered, in name order (so the first claims a shared role name).
        """
        known = set(self.cluster().names())
        candidates = sorted(names) if names is not None else sorted(self.chef.nodes.list())
        found = []
        for name in candidates:
            if name not in known:
                try:
                    self.transition(name, "discovering")
                except (ValidationError, NotFoundError) as exc:
                    if skipped is None:
                        log.warning("node %r is not discovered: %s", name, exc)
                    else:
                        skipped[name] = str(exc)
                    continue
                found.append(name)
        return found

    def check_run_lists(self, names: Iterable[str] | None = None) -> list[str]:
        """Check nodes' run lists hold their crowbar role; repair (warned) if not.

        Checks every machine's node, or ``names``; returns the repaired ones.
        One paged search reads the run lists (``*:*``, the query goiardi answers
        fastest); a node whose run list lacks its role is confirmed from its
        object endpoint (search may lag) before it is repaired.
        """
        wanted = set(names) if names is not None else set(self.cluster().names())
        if not wanted:
            return []
        suspects = [row["name"] for row in self.chef.partial_search(
                        "node", MATCH_ALL, {"name": ["name"], "run_list": ["run_list"]})
                    if row.get("name") in wanted
                    and f"role[{node_role_name(row['name'])}]" not in (row.get("run_list") or [])]
        repaired = []
        for name in sorted(suspects):
            if self._add_role_to_node(name):
                log.warning("node %s had lost role[%s] from its run list; restored it "
                            "(another tool or chef-client overwrote the node)", name, node_role_name(name))
                repaired.append(name)
        return repaired

    def _add_role_to_node(self, name: str) -> bool:
        """The library's only node write: put role[crowbar-<node>] first."""
        try:
            node = self.chef.nodes.get(name)
        except NotFound:
            return False
        entry = f"role[{node_role_name(name)}]"
        run_list = list(node.get("run_list") or [])
        if entry in run_list:
            return False
        node["run_list"] = [entry, *run_list]
        self.chef.nodes.update(name, node)
        return True

    # -- transitions ---------------------------------------------------------------------

    def transition(self, name: str, state: str) -> MachineRecord:
        """Record that machine ``name`` entered ``state`` (what boot scripts call).

        ``discovering`` makes a Chef node a machine. Barclamp hooks for the
        state run afterwards, in the barclamps' run order; reaching ``ready``
        lets waiting proposals proceed.
        """
        check_node_name(name)
        check_state(state)
        created = False
        existing = self.roles.find(name) if state == "discovering" else None
        if existing is not None:
            check_role_owner(name, existing)
        if state == "discovering" and existing is None:
            if self.chef.nodes.find(name) is None:
                raise NotFoundError(
                    f"no Chef node {name!r}: run chef-client on the machine first "
                    "(it creates the node that discovery adopts)"
                )
            _, created = self.roles.create(name, state)
            self._add_role_to_node(name)
        record = None
        if not created:
            record = self._write_state(name, state)
        if record is None:
            record = self.record(name)
        if self._run_hooks(record, state):
            record = self.record(name)  # a hook may have changed it (say, to problem)
        if state == "ready":
            self.crowbar.queue.process(trigger=name)
        return record

    def _write_state(self, name: str, state: str) -> MachineRecord:
        holder: dict[str, dict[str, Any]] = {}

        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            current = str(data.get("state", ""))
            check_transition(name, current, state, allocated=bool(data.get("allocated")))
            holder["role"] = role
            if current == state:
                return False
            data["state"] = state
            data["state_change_time"] = now_iso()
            if state == "problem":
                data.setdefault("problem", {})
            elif current == "problem":
                data.pop("problem", None)
            return True

        report = self.roles.update({name: change}, purpose=f"transition {name} to {state}")
        if report.missing:
            raise NotFoundError(
                f"no machine {name!r}; a machine starts with the state discovering")
        if report.failed:
            raise report.failed[name]
        record = record_from_role(holder["role"])
        assert record is not None
        return record

    def set_problem(self, name: str, reason: str) -> MachineRecord:
        """Put a machine in ``problem``, recording why (shown by the CLI)."""
        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            data["state"] = "problem"
            data["state_change_time"] = now_iso()
            data["problem"] = {"reason": reason, "at": now_iso()}
            return True

        self.roles.update({name: change}, purpose=f"mark {name} problem")
        return self.record(name)

    def _run_hooks(self, record: MachineRecord, state: str) -> bool:
        """Call the barclamps' transition hooks; True if any ran."""
        hooked = [b for b in self.crowbar.barclamps.all()
                  if state in b.transition_states or "all" in b.transition_states]
        if not hooked:
            return False
        facts = self.inventory([record.name]).get(record.name)
        if facts is None:
            return False
        ran = False
        for barclamp in hooked:
            for proposal in self.crowbar.proposals.committed(barclamp.name):
                ran = True
                try:
                    barclamp.on_transition(Context(self.crowbar, barclamp), proposal, facts, state)
                except CrowbarError as exc:
                    log.warning("%s hook for %s entering %s failed: %s",
                                barclamp.name, record.name, state, exc)
                    self.set_problem(record.name, f"{barclamp.name}: {exc}")
        return ran

    # -- operator actions ------------------------------------------------------------------

    def unallocated(self) -> list[str]:
        """Machines waiting for allocation (Crowbar's pause after discovery)."""
        return sorted(r.name for r in self.cluster() if not r.allocated)

    def allocate(self, names: Iterable[str], *, progress: Callable[[int], None] | None = None) -> list[str]:
        """Let paused machines proceed past discovery; returns those changed."""
        names = sorted(set(names))
        for name in names:
            check_node_name(name)
        view = self.cluster()
        unknown = [n for n in names if n not in view]
        if unknown:
            raise NotFoundError(f"no machine {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                                + "; see `crowbar machines list`")

        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            if data.get("allocated"):
                return False
            data["allocated"] = True
            return True

        report = self.roles.update({n: change for n in names}, purpose="allocate machines", progress=progress)
        return sorted(report.written)
