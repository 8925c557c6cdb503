"""Renumbering observed at every moment: every write of the commit recorded, then replayed in order.

A poller sees the roles only now and then; a recorder in front of the server
sees every write. Replaying the address items' creates and deletes and the
roles' writes one by one, no prefix may have an address named by two roles,
a role naming an address whose item another machine (or nobody) holds, or a
machine without a storage address.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import unquote

from barclamp_sdk import Crowbar
from barclamp_sdk.model.addresses import ADDRESSES_BAG, NetworkSpec
from barclamp_sdk.model.naming import NODE_ROLE_PREFIX, node_role_name
from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

WRITES = ("POST", "PUT", "DELETE")


class Recorder(FaultProxy):
    """Every answered write, in the order the server answered: (method, path, status, body)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.writes: list[tuple[str, str, int, bytes]] = []

    def observed(self, method: str, path: str, status: int, body: bytes) -> None:
        if method in WRITES and "/search/" not in path:
            with self._lock:
                self.writes.append((method, unquote(path.split("?")[0]), status, body))


def storage_of(role: dict) -> str | None:
    return (((role.get("default_attributes") or {}).get("crowbar") or {}).get("network") or {}) \
        .get("storage", {}).get("address")


def replay(items: dict[str, str], roles: dict[str, str | None], writes) -> tuple[int, list[str]]:
    """Apply the writes one by one to items (id -> machine) and roles (role -> storage address);
    the number of address-related writes, and what was wrong after any of them."""
    wrong, applied = [], 0
    by_role = {node_role_name(m): m for m in roles}
    prefix = f"/data/{ADDRESSES_BAG}"
    for k, (method, path, status, body) in enumerate(writes, 1):
        if status >= 300:
            continue
        if method == "POST" and path == prefix:
            item = json.loads(body)
            items[item["id"]] = item["machine"]
        elif method == "DELETE" and path.startswith(prefix + "/"):
            items.pop(path.rsplit("/", 1)[1], None)
        elif method == "PUT" and path.startswith(f"/roles/{NODE_ROLE_PREFIX}"):
            roles[by_role[path.rsplit("/", 1)[1]]] = storage_of(json.loads(body))
        else:
            continue
        applied += 1
        named: dict[str, str] = {}
        for machine, address in sorted(roles.items()):
            if address is None:
                wrong.append(f"after write {k}: {machine} has no storage address")
                continue
            if address in named:
                wrong.append(f"after write {k}: {address} named by {named[address]} and {machine}")
            named[address] = machine
            holder = items.get(f"storage-{address.replace('.', '_')}")
            if holder != machine:
                wrong.append(f"after write {k}: {machine} names {address}, whose item {holder or 'nobody'} holds")
    return applied, wrong


def test_renumbering_50_machines_never_has_an_address_in_use_twice_at_any_write(chef_server, crowbar, fleet, chef,
                                                                                barclamps_under_test):
    crowbar.proposals.create("network", "default")
    assert crowbar.proposals.commit("network", "default").status == "applied"
    names = fleet.add(50, "vm", clients=False)
    crowbar.machines.discover(names)
    allocated = crowbar.addresses.allocate("storage", names, user="storer-default").allocated
    assert len(allocated) == 50
    # The range shrinks onto part of itself: machines inside stay, the others move into its free
    # addresses. It ends at the 30th lowest address given (20 move), 100 addresses long.
    end = sorted(ipaddress.ip_address(a) for a in allocated.values())[29]
    start = max(ipaddress.ip_address("192.168.125.10"), end - 99)
    crowbar.proposals.set("network", "default", {"networks.storage.ranges.host.start": str(start),
                                                 "networks.storage.ranges.host.end": str(end)})
    edited = crowbar.proposals.get("network", "default").attributes["networks"]["storage"]
    plan = crowbar.addresses.renumber_plan("storage", NetworkSpec.parse("storage", edited))  # the dry run
    before = {n: storage_of(chef.roles.get(node_role_name(n))) for n in names}
    items = {r["address"]: r["machine"] for r in crowbar.addresses.items("storage")}
    assert 0 < len(plan) < 50  # some move, some stay
    with Recorder(chef.config.server_url) as recorder:
        through = Crowbar(chef_server.server.client(server_url=recorder.url), barclamps=barclamps_under_test,
                          secret=TEST_SECRET)
        assert through.proposals.commit("network", "default").status == "applied"
    applied, wrong = replay({f"storage-{a.replace('.', '_')}": m for a, m in items.items()}, dict(before),
                            recorder.writes)
    assert wrong == []
    after = {n: storage_of(chef.roles.get(node_role_name(n))) for n in names}
    moved = {n for n in names if after[n] != before[n]}
    assert {n: (before[n], after[n]) for n in moved} == {p["machine"]: (p["old"], p["new"]) for p in plan}
    assert applied >= 3 * len(moved)  # each move: a create, a role write, a delete, all replayed
    assert len(set(after.values())) == 50
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
