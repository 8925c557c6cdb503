"""A database snapshot of goiardi on PostgreSQL puts the server back exactly, search included."""

from __future__ import annotations

import pytest

from barclamp_sdk.model.naming import PROPOSALS_BAG, node_role_name
from barclamp_sdk.testing.snapshot import server_snapshot


def searched(chef) -> dict[str, list[str]]:
    """What search answers: every node, role and proposal by name."""
    return {"node": sorted(r["name"] for r in chef.search("node", "*:*")),
            "role": sorted(r["name"] for r in chef.search("role", "*:*")),
            PROPOSALS_BAG: sorted(r.get("raw_data", r)["id"] for r in chef.search(PROPOSALS_BAG, "*:*"))}


def test_a_restore_gives_back_exactly_the_snapshot_whatever_was_written_since(chef_server, chef, crowbar, fleet):
    snapshot = chef_server.database_snapshot()
    if snapshot is None:
        pytest.skip("the in-memory store has no database to snapshot (CROWBAR_TEST_SERVER=memory)")
    names = fleet.ready(3, "compute")
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    snapshot.take()
    try:
        before, found = server_snapshot(chef), searched(chef)
        for _ in range(2):  # each restore starts again from the same state
            fleet.ready(2, "compute")  # new nodes and roles, searchable
            crowbar.proposals.set("widget", "default", {"port": 9001})
            crowbar.proposals.commit("widget", "default")
            chef.roles.delete(node_role_name(names[0]))
            chef.data_bags.ensure("scratch")
            chef.data_bags.create_item("scratch", {"id": "x"})
            assert server_snapshot(chef) != before
            snapshot.restore()
            assert server_snapshot(chef) == before
            assert searched(chef) == found
            assert snapshot.differences() == 0
        # the sequences came back too: new objects get the ids they would have had, and work
        fleet.ready(1, "compute")
        assert len(chef.nodes.list()) == 4
    finally:
        snapshot.drop()
