"""What a Chef server holds, as one comparable value (for "nothing written" checks).

``server_snapshot(chef)`` reads every node, role, environment, client and data
bag item. Compare two snapshots to prove a refused command wrote nothing::

    before = server_snapshot(chef)
    code, out, err = crowbar_cli("nova", "proposal", "edit", "default", "--file", "bad.yaml")
    assert code != 0 and server_snapshot(chef) == before

Empty data bags are left out: taking and releasing a lock may leave the empty
``crowbar_locks`` bag behind, which holds nothing.
"""

from __future__ import annotations

from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFound


def server_snapshot(chef: ChefClient) -> dict[str, Any]:
    """Every object on the server, by kind and name."""
    snapshot: dict[str, Any] = {
        "nodes": {n: chef.nodes.get(n) for n in sorted(chef.nodes.list())},
        "roles": {n: chef.roles.get(n) for n in sorted(chef.roles.list())},
        "environments": {n: chef.environments.get(n) for n in sorted(chef.environments.list())},
        "clients": sorted(chef.clients.list()),
        "data_bags": {},
    }
    for bag in sorted(chef.data_bags.list()):
        try:
            items = {i: chef.data_bags.get_item(bag, i) for i in sorted(chef.data_bags.items(bag))}
        except NotFound:
            continue
        if items:
            snapshot["data_bags"][bag] = items
    return snapshot
