"""Reading machines: Crowbar records and typed facts, complete even while search lags.

:class:`ClusterReader` is the one place that reads machines in bulk: the
records of ``crowbar-<node>`` roles (:class:`ClusterView`) and the typed
facts of nodes (:class:`Inventory`), each role parsed by
:func:`record_from_role` alone.

Search lags writes on a production Chef server (about 1 s on OpenSearch,
and goiardi in memory indexes asynchronously), so search alone would miss a
machine discovered a moment ago and keep one deleted a moment ago. A few
named machines are read from their object endpoints; the whole cluster is
read by paged partial search and checked against the object lists
(``GET /roles``, ``GET /nodes``, which the database answers): what search
has not indexed yet is read directly, and what is gone is left out. What
search returns for an object it has indexed may still be its previous
version; writers re-read roles under their locks before changing them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.model.cluster import MATCH_ALL, ROLE_SEARCH_KEYS, ClusterView, MachineRecord, record_from_role
from barclamp_sdk.model.inventory import NODE_KEYS, Inventory, machine_from_search
from barclamp_sdk.model.naming import NODE_ROLE_PREFIX, check_node_name, node_role_name
from barclamp_sdk.model.parallel import run_parallel

log = logging.getLogger(__name__)

#: Up to this many named machines are read from their object endpoints, not by search.
DIRECT_READ_LIMIT = 32


def _machine_name(name: str) -> bool:
    try:
        check_node_name(name)
    except ValidationError:
        return False
    return True


def node_row(node: Mapping[str, Any], keys: Mapping[str, Sequence[str]] = NODE_KEYS) -> dict[str, Any]:
    """A node object shaped as a partial-search row of ``keys`` (attributes merged as Chef merges them)."""
    merged: dict[str, Any] = {}
    for level in ("default", "normal", "override", "automatic"):  # lowest precedence first
        value = node.get(level)
        if isinstance(value, Mapping):
            merged = _merge(merged, value)
    row: dict[str, Any] = {}
    for key, path in keys.items():
        if list(path) == ["name"]:
            row[key] = node.get("name")
            continue
        current: Any = merged
        for part in path:
            current = current.get(part) if isinstance(current, Mapping) else None
        row[key] = current
    return row


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


class ClusterReader:
    """Snapshots of machines' records and facts (reads only)."""

    def __init__(self, chef: ChefClient, *, concurrency: int = 8) -> None:
        self.chef = chef
        self.concurrency = concurrency

    # -- records ---------------------------------------------------------------------------

    def view(self, names: Iterable[str] | None = None) -> ClusterView:
        """Crowbar records of every machine, or of ``names`` (machines among them)."""
        wanted = None if names is None else sorted(set(names))
        if wanted is not None and len(wanted) <= DIRECT_READ_LIMIT:
            return ClusterView(self._records_of(wanted))
        records = self._all_records()
        if wanted is not None:
            keep = set(wanted)
            records = {n: r for n, r in records.items() if n in keep}
        return ClusterView(records)

    def read(self, names: Iterable[str]) -> ClusterView:
        """Crowbar records of ``names`` from their roles' object endpoints (never search)."""
        return ClusterView(self._records_of(sorted(set(names))))

    def record(self, name: str) -> MachineRecord:
        """One machine's Crowbar record, read from its role's object endpoint."""
        record = self._records_of([name]).get(name)
        if record is None:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        return record

    def _records_of(self, names: list[str]) -> dict[str, MachineRecord]:
        names = [n for n in names if _machine_name(n)]  # a name no node can have is no machine: no request
        roles = run_parallel(lambda n: self.chef.roles.find(node_role_name(n)), names,
                             workers=self.concurrency, name="records")
        records = {}
        for name, role in zip(names, roles):
            record = record_from_role(role) if role else None
            if record is not None and record.name == name:
                records[name] = record
        return records

    def _all_records(self) -> dict[str, MachineRecord]:
        listed = {r for r in self.chef.roles.list() if r.startswith(NODE_ROLE_PREFIX)}
        records: dict[str, MachineRecord] = {}
        indexed = set()
        for row in self.chef.partial_search("role", MATCH_ALL, ROLE_SEARCH_KEYS):
            role = str(row.get("name", ""))
            if role not in listed:
                continue  # not a machine's role, or deleted and not yet out of the index
            indexed.add(role)
            record = record_from_role(row)
            if record is not None:
                records[record.name] = record
        unindexed = sorted(listed - indexed)
        if unindexed:
            log.info("search lags: %d machine role(s) not indexed yet, read directly", len(unindexed))
            found = run_parallel(self.chef.roles.find, unindexed, workers=self.concurrency, name="records")
            for role in found:
                record = record_from_role(role) if role else None
                if record is not None:
                    records[record.name] = record
        return records

    # -- facts -------------------------------------------------------------------------------

    def inventory(self, names: Iterable[str] | None = None, *, view: ClusterView | None = None) -> Inventory:
        """Typed facts of every machine (or of ``names``); ``view``, when given, holds their records already."""
        wanted = None if names is None else sorted(set(names))
        if wanted == []:
            return Inventory([])
        records = (view if view is not None else self.view(wanted)).records()
        if view is not None and wanted is not None:
            records = {n: records[n] for n in wanted if n in records}
        if wanted is not None and len(wanted) <= DIRECT_READ_LIMIT:
            nodes = run_parallel(self.chef.nodes.find, [n for n in wanted if n in records],
                                 workers=self.concurrency, name="nodes")
            rows: Iterable[dict[str, Any]] = [node_row(node) for node in nodes if node]
        else:
            rows = self._all_node_rows(set(records))
        return Inventory(machine_from_search(row, records[row["name"]]) for row in rows
                         if row.get("name") in records)

    def _all_node_rows(self, machines: set[str]) -> Iterator[dict[str, Any]]:
        """Rows of ``machines``' nodes, one page of search in memory at a time (then the unindexed ones)."""
        listed = set(self.chef.nodes.list()) & machines
        indexed = set()
        for row in self.chef.partial_search("node", MATCH_ALL, NODE_KEYS):
            name = row.get("name")
            if name in listed and name not in indexed:
                indexed.add(name)
                yield row
        unindexed = sorted(listed - indexed)
        if unindexed:
            log.info("search lags: %d node(s) not indexed yet, read directly", len(unindexed))
            nodes = run_parallel(self.chef.nodes.find, unindexed, workers=self.concurrency, name="nodes")
            yield from (node_row(node) for node in nodes if node)
