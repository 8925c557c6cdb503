"""What a Chef server holds, as one comparable value (for "nothing written" checks).

``server_snapshot(chef)`` reads every node, role, environment, client and data
bag item. Compare two snapshots to prove a refused command wrote nothing::

    before = server_snapshot(chef)
    code, out, err = crowbar_cli("nova", "proposal", "edit", "default", "--file", "bad.yaml")
    assert code != 0 and server_snapshot(chef) == before

Empty data bags are left out: taking and releasing a lock may leave the empty
``crowbar_locks`` bag behind, which holds nothing.

``listed_only`` names bags whose items are listed, not read: for a bag that
is only ever added to and pruned, such as the audit trail (each entry a fresh
item, never rewritten), the names show every write, and a long test that
snapshots after each of thousands of commands does not read the whole trail
each time::

    server_snapshot(chef, listed_only={AUDIT_BAG})

``role_snapshot(chef)`` is every role without the counters each write bumps
(:data:`ROLE_BOOKKEEPING`): what two commits of the same content must agree on::

    before = role_snapshot(chef)        # r2 applied
    crowbar.proposals.revert("nova", "default", 2, commit=True)
    assert role_snapshot(chef) == before
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFound


#: Role keys that change on every write, whatever the content: left out by :func:`role_snapshot`.
ROLE_BOOKKEEPING = frozenset({"crowbar-revision", "crowbar-fingerprint", "state_change_time"})


def role_snapshot(chef: ChefClient, ignore: frozenset[str] = ROLE_BOOKKEEPING) -> dict[str, Any]:
    """Every role by name, without the ``ignore`` keys (at any depth)."""
    return {name: _without(chef.roles.get(name), ignore) for name in sorted(chef.roles.list())}


def _without(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_without(v, ignore) for v in value]
    return value


def server_snapshot(chef: ChefClient, *, listed_only: Collection[str] = ()) -> dict[str, Any]:
    """Every object on the server, by kind and name (items of ``listed_only`` bags: names only)."""
    snapshot: dict[str, Any] = {
        "nodes": {n: chef.nodes.get(n) for n in sorted(chef.nodes.list())},
        "roles": {n: chef.roles.get(n) for n in sorted(chef.roles.list())},
        "environments": {n: chef.environments.get(n) for n in sorted(chef.environments.list())},
        "clients": sorted(chef.clients.list()),
        "data_bags": {},
    }
    for bag in sorted(chef.data_bags.list()):
        try:
            names = sorted(chef.data_bags.items(bag))
            items = ({i: None for i in names} if bag in listed_only
                     else {i: chef.data_bags.get_item(bag, i) for i in names})
        except NotFound:
            continue
        if items:
            snapshot["data_bags"][bag] = items
    return snapshot
