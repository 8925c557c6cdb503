"""A compact snapshot of every machine's ``crowbar-<node>`` role.

Read with partial search in pages (one request per 1,000 machines), and kept
small: per machine its state, allocation, role assignments (with the owning
proposal), claimed disks, pending proposals and whether it drifted. Search
can lag behind writes on a production Chef server, so a writer re-reads a
role from its object endpoint (under its lock) before changing it; the
snapshot only decides what needs looking at.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.model.noderoles import DRIFT, FINGERPRINT, NODE_ATTRIBUTES, REVISION, role_fingerprint

log = logging.getLogger(__name__)

#: Every document: goiardi answers ``*:*`` from its list of documents but
#: evaluates any field query (even ``name:crowbar-*``) by scanning every
#: document's flattened attributes, 10 to 40 times slower; a Solr-backed Chef
#: server answers both quickly. Rows are filtered here instead.
MATCH_ALL = "*:*"
ROLE_SEARCH_KEYS = {
    "name": ["name"],
    "default_attributes": ["default_attributes"],
    "run_list": ["run_list"],
    "env_run_lists": ["env_run_lists"],
}


@dataclass(frozen=True)
class Entry:
    """One role on a machine's run-list map."""

    owner: str
    priority: int
    states: tuple[str, ...]


@dataclass(frozen=True)
class MachineRecord:
    """What the snapshot knows about one machine."""

    name: str
    role: str
    state: str
    allocated: bool
    entries: dict[str, Entry]
    claims: dict[str, str]
    pending: dict[str, tuple[str, ...]]
    drifted: bool
    revision: int
    hardware: dict[str, Any]
    #: Per proposal key: the per-machine settings it committed into this role (``{setting: value}``).
    node_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Network -> the address the role names there (``crowbar.network.<network>.address``).
    addresses: dict[str, str] = field(default_factory=dict)

    def holds(self, role: str) -> bool:
        return role in self.entries

    @property
    def elements(self) -> list[str]:
        """Barclamp elements held (config roles left out), by priority."""
        return [r for r, e in sorted(self.entries.items(), key=lambda i: (i[1].priority, i[0]))
                if "-config-" not in r]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "state": self.state, "allocated": self.allocated,
            "elements": self.elements, "roles": sorted(self.entries),
            "pending": {k: list(v) for k, v in self.pending.items()},
            "claimed_disks": dict(self.claims), "drifted": self.drifted, "revision": self.revision,
            "hardware": dict(self.hardware),
        }


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]``: a mapping, or empty when absent; ValueError for anything else."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"crowbar.{key} is a {type(value).__name__}, not a mapping")
    return value


def _tolerant(read: Callable[[dict[str, Any]], MachineRecord | None]) -> Callable[[dict[str, Any]], MachineRecord | None]:
    """A role of an unknown shape under a ``crowbar-`` name is reported (warned) and left out, never fatal."""
    @functools.wraps(read)
    def wrapper(row: dict[str, Any]) -> MachineRecord | None:
        try:
            return read(row)
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("role %s is not a machine role barclamp-sdk can read (%s: %s); left out",
                        row.get("name") if isinstance(row, dict) else "?", type(exc).__name__, exc)
            return None
    return wrapper


@_tolerant
def record_from_role(row: dict[str, Any]) -> MachineRecord | None:
    """A :class:`MachineRecord` from a role (or a partial-search row of one).

    The one parser of a ``crowbar-<node>`` role's Crowbar data. A role
    whose data has the wrong shape is reported (a warning) and left out, so
    one odd role never breaks a snapshot.
    """
    attributes = row.get("default_attributes") or {}
    data = attributes.get("crowbar") if isinstance(attributes, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("node"), str):
        return None  # a role named crowbar-* that is not a machine's
    entries = {}
    for role, spec in _mapping(data, "run_list_map").items():
        if not isinstance(spec, dict):
            raise ValueError(f"crowbar.run_list_map.{role} is not a mapping")
        states = spec.get("states") or ("all",)
        if not isinstance(states, (list, tuple)):
            raise ValueError(f"crowbar.run_list_map.{role}.states is not a list")
        entries[role] = Entry(str(spec.get("proposal", "")), int(spec.get("priority", 1000)),
                              tuple(str(state) for state in states))
    pending = {}
    for key, elements in _mapping(data, "pending").items():
        if not isinstance(elements, (list, tuple)):
            raise ValueError(f"crowbar.pending.{key} is not a list")
        pending[str(key)] = tuple(elements)
    stored = data.get(FINGERPRINT)
    drifted = bool(data.get(DRIFT)) or (stored is not None and stored != role_fingerprint(row))
    return MachineRecord(
        name=data["node"],
        role=str(row.get("name", "")),
        state=str(data.get("state", "")),
        allocated=bool(data.get("allocated")),
        entries=entries,
        claims={str(k): str(v) for k, v in _mapping(data, "claimed_disks").items()},
        pending=pending,
        drifted=drifted,
        revision=int(data.get(REVISION, 0) or 0),
        hardware=dict(_mapping(data, "hardware")),
        node_attributes=node_attributes_of(attributes, data["node"]),
        addresses={str(network): str(entry["address"]) for network, entry in _mapping(data, "network").items()
                   if isinstance(entry, dict) and entry.get("address")},
    )


def node_attributes_of(attributes: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    """Per proposal key, the per-machine settings a ``crowbar-<node>`` role holds for it.

    Listed in ``crowbar.node_attributes`` (proposal key -> setting names),
    stored at ``<barclamp>.<setting>.<node>`` of the role's default attributes.
    """
    found: dict[str, dict[str, Any]] = {}
    owned = (attributes.get("crowbar") or {}).get(NODE_ATTRIBUTES) or {}
    if not isinstance(owned, dict):
        raise ValueError(f"crowbar.{NODE_ATTRIBUTES} is not a mapping")
    for key, settings in owned.items():
        barclamp = str(key).split("-")[0]  # <barclamp>-<name>; barclamp names have no "-"
        values = attributes.get(barclamp) if isinstance(attributes.get(barclamp), dict) else {}
        found[str(key)] = {str(s): (values.get(s) or {}).get(node) for s in settings or ()
                           if isinstance(values.get(s), dict) and node in values[s]}
    return found


class ClusterView:
    """Every machine's Crowbar record, from one paged partial search."""

    def __init__(self, records: dict[str, MachineRecord]) -> None:
        self._records = records


    def get(self, name: str) -> MachineRecord | None:
        return self._records.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __iter__(self) -> Iterator[MachineRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def names(self) -> list[str]:
        return sorted(self._records)

    def records(self) -> dict[str, MachineRecord]:
        """Machine name -> record (a copy)."""
        return dict(self._records)

    def holders(self, role: str) -> dict[str, str]:
        """Machines holding ``role``: machine -> owning proposal key."""
        return {r.name: r.entries[role].owner for r in self if role in r.entries}
