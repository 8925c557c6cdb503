"""Reading machines: Crowbar records and typed facts, by paged partial search.

:class:`ClusterReader` is the one place that reads the whole cluster: the
records of every ``crowbar-<node>`` role (:class:`ClusterView`) and the
typed facts of nodes (:class:`Inventory`), each machine's role parsed by
:func:`record_from_role` alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from barclamp_sdk.chef.client import ChefClient, solr_escape
from barclamp_sdk.errors import NotFoundError
from barclamp_sdk.model.cluster import MATCH_ALL, ROLE_SEARCH_KEYS, ClusterView, MachineRecord, record_from_role
from barclamp_sdk.model.inventory import NODE_KEYS, Inventory, machine_from_search
from barclamp_sdk.model.naming import NODE_ROLE_PREFIX, node_role_name

#: Above this many names, read everything and filter instead of an OR query.
OR_QUERY_LIMIT = 40


def names_query(names: Iterable[str], field: str = "name") -> str:
    """``name:a OR name:b ...`` with each value escaped."""
    return " OR ".join(f"{field}:{solr_escape(n)}" for n in names)


class ClusterReader:
    """Snapshots of machines' records and facts (reads only)."""

    def __init__(self, chef: ChefClient) -> None:
        self.chef = chef

    def view(self) -> ClusterView:
        """A snapshot of every machine's Crowbar record."""
        return ClusterView.load(self.chef)

    def record(self, name: str) -> MachineRecord:
        """One machine's Crowbar record, read from its role's object endpoint."""
        role = self.chef.roles.find(node_role_name(name))
        record = record_from_role(role) if role else None
        if record is None:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        return record

    def inventory(self, names: Iterable[str] | None = None) -> Inventory:
        """Typed facts of every machine (or of ``names``), by partial search."""
        wanted = None if names is None else sorted(set(names))
        if wanted == []:
            return Inventory([])
        use_or = wanted is not None and len(wanted) <= OR_QUERY_LIMIT
        node_query = names_query(wanted) if use_or else MATCH_ALL  # type: ignore[arg-type]
        role_query = names_query([node_role_name(n) for n in wanted]) if use_or else MATCH_ALL  # type: ignore[union-attr]
        records: dict[str, MachineRecord] = {}
        for row in self.chef.partial_search("role", role_query, ROLE_SEARCH_KEYS):
            if str(row.get("name", "")).startswith(NODE_ROLE_PREFIX):
                record = record_from_role(row)
                if record is not None:
                    records[record.name] = record
        keep = set(wanted) if wanted is not None else None
        machines = []
        for row in self.chef.partial_search("node", node_query, NODE_KEYS):
            name: Any = row.get("name")
            if name in records and (keep is None or name in keep):
                machines.append(machine_from_search(row, records[name]))
        return Inventory(machines)
