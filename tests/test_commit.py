"""Commit: proposals become Chef roles, batch by batch, idempotently."""

from __future__ import annotations

import logging

import pytest

import barclamp_sdk.model.commit.committer as committer
from barclamp_sdk.model.naming import machine_shard

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient
from barclamp_sdk.errors import DriftError, ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


@pytest.fixture
def ready(fleet):
    return fleet.ready(3, "compute") + fleet.ready(1, "storage")


def node_role(chef, name):
    return chef.roles.get(node_role_name(name))


def test_commit_writes_config_role_and_machine_roles(crowbar, ready, chef):
    proposal = crowbar.proposals.create("widget", "default")
    result = crowbar.proposals.commit("widget", "default")
    assert result.status == "applied" and result.machines_written == 4
    config = chef.roles.get("widget-config-default")
    assert config["default_attributes"]["widget"]["port"] == 8080
    deployment = config["override_attributes"]["widget"]
    assert deployment["elements"] == proposal.elements and deployment["crowbar-revision"] == 1
    server = proposal.elements["widget-server"][0]
    role = node_role(chef, server)
    data = role["default_attributes"]["crowbar"]
    assert data["run_list_map"]["widget-server"] == {
        "priority": 50, "states": ["readying", "ready", "applying"], "proposal": "widget-default"}
    assert role["run_list"] == ["role[widget-config-default]", "role[widget-server]", "role[widget-agent]"]
    store = node_role(chef, ready[3])
    assert store["run_list"] == ["role[widget-config-default]", "role[widget-store]", "role[widget-agent]"]
    assert store["default_attributes"]["crowbar"]["claimed_disks"] == {"sdb": "widget-default", "sdc": "widget-default"}
    # Element roles were uploaded with their recipes.
    assert chef.roles.get("widget-agent")["run_list"] == ["recipe[widget::agent]"]
    status = crowbar.proposals.status("widget", "default")
    assert (status.status, status.applied_revision) == ("ready", 1)


def test_converged_node_runs_the_roles(crowbar, ready, chef, fleet):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    node = fleet.converge(ready[3])
    assert node["automatic"]["recipes"] == ["widget::store", "widget::agent"]
    assert node["default"]["widget"]["port"] == 8080  # from the config role
    assert node["override"]["widget"]["elements"]["widget-store"] == [ready[3]]


def test_recommitting_an_unchanged_proposal_writes_nothing(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    before = chef.stats.snapshot()
    result = crowbar.proposals.commit("widget", "default")
    after = chef.stats.snapshot()
    assert result.status == "unchanged"
    assert after["writes"] - before["writes"] == 0
    assert after.get("put", 0) == before.get("put", 0) and after.get("delete", 0) == before.get("delete", 0)


def test_dry_run_writes_nothing_and_shows_exactly_what_commit_does(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    before = chef.stats.snapshot()["writes"]
    planned = crowbar.proposals.commit("widget", "default", dry_run=True)
    assert chef.stats.snapshot()["writes"] == before
    assert planned.status == "planned"
    by_role = {c.role: c for c in planned.changes}
    assert by_role["widget-config-default"].action == "create"
    change = by_role[node_role_name(ready[3])]
    assert change.added == ["widget-agent", "widget-config-default", "widget-store"]
    assert change.run_list_before == []
    assert change.run_list_after == ["role[widget-config-default]", "role[widget-store]", "role[widget-agent]"]
    assert any("claimed_disks.sdb" in c for c in change.changes)
    crowbar.proposals.commit("widget", "default")
    assert node_role(chef, ready[3])["run_list"] == change.run_list_after
    assert crowbar.proposals.commit("widget", "default", dry_run=True).changes == []


def test_batches_are_written_in_element_order(chef_server, crowbar, ready, chef, fault_proxy):
    proxy = fault_proxy()
    proxied = ChefClient(chef_server.config(server_url=proxy.url))
    api = Crowbar(proxied, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET, concurrency=1)
    proposal = api.proposals.create("widget", "default")
    server = proposal.elements["widget-server"][0]
    api.proposals.commit("widget", "default")
    puts = [path for method, path in proxy.seen if method == "PUT" and path.startswith("/roles/crowbar-")]
    assert puts[0] == f"/roles/{node_role_name(server)}"  # batch 1: the server
    assert len(puts) == 4
    first_config = min(i for i, (m, p) in enumerate(proxy.seen) if p in ("/roles", "/roles/widget-config-default")
                       and m in ("POST", "PUT"))
    first_machine = min(i for i, (m, p) in enumerate(proxy.seen) if m == "PUT" and p.startswith("/roles/crowbar-"))
    assert first_config < first_machine  # the config role exists before any node names it


def test_element_states_decide_the_run_list(crowbar, ready, chef, fleet):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    name = ready[0]
    crowbar.machines.transition(name, "hardware-updating")  # not one of the element states
    role = node_role(chef, name)
    assert role["run_list"] == []
    assert "widget-agent" in role["default_attributes"]["crowbar"]["run_list_map"]
    crowbar.machines.transition(name, "hardware-updated")
    crowbar.machines.transition(name, "ready")
    assert "role[widget-agent]" in node_role(chef, name)["run_list"]


def test_moving_a_machine_and_removing_one(crowbar, ready, chef):
    proposal = crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    storage = ready[3]
    others = [n for n in proposal.elements["widget-agent"] if n != storage]

    def move(p):
        p.unassign("widget-store", storage)
        p.settings = p.settings.model_copy(update={"disks": {}})
        p.elements["widget-agent"] = others

    crowbar.proposals.update("widget", "default", move, change="storage machine leaves")
    before = chef.stats.snapshot()["writes"]
    result = crowbar.proposals.commit("widget", "default")
    assert result.machines_written == 1
    writes = chef.stats.snapshot()["writes"] - before
    assert writes <= 8, writes
    role = node_role(chef, storage)
    assert role["run_list"] == []
    data = role["default_attributes"]["crowbar"]
    assert data["run_list_map"] == {} and data["claimed_disks"] == {}


def test_commit_repairs_a_node_that_lost_its_role(crowbar, ready, chef, caplog):
    crowbar.proposals.create("widget", "default")
    node = chef.nodes.get(ready[1])
    node["run_list"] = ["recipe[something]"]  # another tool overwrote it
    chef.nodes.update(ready[1], node)
    with caplog.at_level(logging.WARNING):
        result = crowbar.proposals.commit("widget", "default")
    assert result.repaired_nodes == [ready[1]]
    assert chef.nodes.get(ready[1])["run_list"] == [f"role[{node_role_name(ready[1])}]", "recipe[something]"]
    assert "lost role[" in caplog.text


def test_hand_edited_roles_are_reported_and_overwritten_only_with_force(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    name = ready[0]
    role = node_role(chef, name)
    role["run_list"].append("recipe[hand::made]")
    chef.roles.update(role["name"], role)
    crowbar.proposals.set("widget", "default", {"port": "9999"})
    before = chef.stats.snapshot()["writes"]
    with pytest.raises(DriftError) as info:
        crowbar.proposals.commit("widget", "default")
    assert node_role_name(name) in str(info.value) and "--force" in str(info.value)
    assert chef.stats.snapshot()["writes"] - before == 4  # lock traffic only: proposal + its shard
    assert chef.roles.get("widget-config-default")["default_attributes"]["widget"]["port"] == 8080
    assert crowbar.proposals.commit("widget", "default", dry_run=True).drifted == [name]
    result = crowbar.proposals.commit("widget", "default", force=True)
    assert result.status == "applied" and name in result.drifted
    assert "recipe[hand::made]" not in node_role(chef, name)["run_list"]
    assert crowbar.proposals.commit("widget", "default").status == "unchanged"


def test_a_hand_edited_config_role_is_reported_and_overwritten_only_with_force(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    config = chef.roles.get("widget-config-default")
    config["default_attributes"]["widget"]["port"] = 1234  # an admin "fixed" it in place
    chef.roles.update("widget-config-default", config)
    before = chef.stats.snapshot()["writes"]
    with pytest.raises(DriftError) as info:
        crowbar.proposals.commit("widget", "default")  # the proposal did not change: drift alone
    assert "widget-config-default" in str(info.value) and "--force" in str(info.value)
    assert "\n" not in str(info.value)
    assert chef.stats.snapshot()["writes"] - before <= 4  # lock traffic only
    assert chef.roles.get("widget-config-default")["default_attributes"]["widget"]["port"] == 1234
    assert crowbar.proposals.commit("widget", "default", force=True).status == "applied"
    assert chef.roles.get("widget-config-default")["default_attributes"]["widget"]["port"] == 8080
    assert crowbar.proposals.commit("widget", "default").status == "unchanged"


def test_override_attributes_of_node_roles_are_the_admins(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    role = node_role(chef, ready[0])
    role["override_attributes"] = {"widget": {"port": 7}}
    chef.roles.update(role["name"], role)
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    assert node_role(chef, ready[0])["override_attributes"] == {"widget": {"port": 7}}


def test_a_disk_claimed_by_another_proposal_is_refused(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    storage = ready[3]
    crowbar.proposals.create("widget", "second", from_inventory=False)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("widget", "second", {
            "elements.widget-server": ready[0], "elements.widget-store": storage,
            "disks": f"{{'{storage}': [sdb]}}"})
    assert any("disk sdb on " + storage + " is claimed by widget/default" in e for e in info.value.errors)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("widget", "second", {
            "elements.widget-server": ready[0], "disks": f"{{'{ready[0]}': [sda]}}"})
    assert any("holds the operating system" in e for e in info.value.errors)


def node_roles(chef):
    return {name: chef.roles.get(name) for name in chef.roles.list() if name.startswith("crowbar-")}


# Replays a lagging snapshot by hand: under the production personality real lag makes
# the commit refuse before the speculative pass writes, so this one runs on the plain server.
@pytest.mark.production_personality(False)
def test_a_lagging_search_snapshot_is_caught_and_a_refused_commit_undone(crowbar, ready, chef, monkeypatch):
    # Search lags behind writes on a production Chef server: replay that with a
    # snapshot taken before another commit put a conflicting role on a machine.
    storage = ready[3]
    crowbar.proposals.create("widget", "default")
    assert storage in crowbar.proposals.get("widget", "default").elements["widget-store"]
    lagging = crowbar.machines.cluster()
    crowbar.proposals.create("gizmo", "default", from_inventory=False)
    crowbar.proposals.set("gizmo", "default", {"elements.gizmo-store": storage})
    assert crowbar.proposals.commit("gizmo", "default").status == "applied"
    before = node_roles(chef)
    monkeypatch.setattr(crowbar.machines.reader, "view", lambda names=None: lagging)
    monkeypatch.setattr(committer, "DIRECT_READ_LIMIT", 0)  # the snapshot path, as with many machines
    puts = chef.stats.snapshot()["by_endpoint"].get("PUT /roles/*", 0)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.commit("widget", "default")
    assert any("widget-store conflicts with gizmo-store" in e for e in info.value.errors)
    # The machines other than the storage server were written, then restored.
    assert chef.stats.snapshot()["by_endpoint"].get("PUT /roles/*", 0) - puts >= 2 * (len(ready) - 1)
    assert node_roles(chef) == before  # what the speculative pass wrote was put back
    assert chef.roles.find("widget-config-default") is None
    assert crowbar.locks.all() == []


def test_a_lagging_snapshot_that_changes_nothing_still_commits_everything(crowbar, ready, chef, monkeypatch,
                                                                        mocker):
    crowbar.proposals.create("widget", "default")
    lagging = crowbar.machines.cluster()
    crowbar.proposals.create("gizmo", "default", from_inventory=False)
    crowbar.proposals.set("gizmo", "default", {"elements.gizmo-node": ready[0]})
    crowbar.proposals.commit("gizmo", "default")
    apply_pre = mocker.spy(type(crowbar.barclamps.get("widget")), "apply_pre")
    with monkeypatch.context() as patch:
        patch.setattr(crowbar.machines.reader, "view", lambda names=None: lagging)
        patch.setattr(committer, "DIRECT_READ_LIMIT", 0)  # the snapshot path, as with many machines
        result = crowbar.proposals.commit("widget", "default")
    assert result.status == "applied" and result.machines_written == len(ready)
    assert apply_pre.call_count == 1  # the careful path does not run the barclamp's hook again
    proposal = crowbar.proposals.get("widget", "default")
    for name in ready:
        run_list_map = node_role(chef, name)["default_attributes"]["crowbar"]["run_list_map"]
        assert set(proposal.elements_of(name)) <= set(run_list_map)
    assert "gizmo-node" in node_role(chef, ready[0])["default_attributes"]["crowbar"]["run_list_map"]
    assert crowbar.proposals.commit("widget", "default").status == "unchanged"


def test_deactivate_takes_everything_back(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    result = crowbar.proposals.deactivate("widget", "default")
    assert result.machines_written == 4
    assert chef.roles.find("widget-config-default") is None
    for name in ready:
        data = node_role(chef, name)["default_attributes"]["crowbar"]
        assert data["run_list_map"] == {} and data["claimed_disks"] == {}
    assert crowbar.proposals.status("widget", "default").status == "hold"
    crowbar.proposals.delete("widget", "default")


def test_a_small_commit_on_an_idle_cluster_sends_few_requests(crowbar, fleet, chef):
    """Each command reads what it needs once: the document twice (before and under
    its lock), no search at all for a few machines (search may lag writes), one
    read and one write per role, one read per node to check its run list.

    Lock traffic is a create and a delete per lock item: the proposal's and one per
    shard of the machines (3 here), 8 of the 25 requests; one records the audit entry. The issue's target of 16
    is not met (see docs/architecture.md, "Requests of a commit").
    """
    names = fleet.ready(3, "compute")
    crowbar.install("sprocket")
    crowbar.proposals.create("sprocket", "default")
    shards = {machine_shard(n) for n in names}
    before = chef.stats.snapshot()
    result = crowbar.proposals.commit("sprocket", "default")
    after = chef.stats.snapshot()
    assert result.status == "applied" and result.machines_written == 3
    sent = after["reads"] + after["writes"] - before["reads"] - before["writes"]
    endpoints = {k: after["by_endpoint"].get(k, 0) - before["by_endpoint"].get(k, 0) for k in after["by_endpoint"]}
    assert endpoints.get("POST /data/*", 0) == 1 + len(shards) + 1  # lock items created, the audit entry
    assert endpoints.get("DELETE /data/*", 0) == 1 + len(shards)  # and released
    assert endpoints.get("GET /data/*", 0) == 3  # the document twice, the queue once
    assert endpoints.get("GET /roles/*", 0) == 3 + 1  # each machine's role, the element role
    assert endpoints.get("PUT /roles/*", 0) == 3
    assert endpoints.get("GET /nodes/*", 0) == 3  # run lists, from the nodes themselves
    assert sent <= 16 + 2 * (1 + len(shards)) + 1, endpoints  # + 1: the audit entry
    # Committing it again reads, decides nothing changed, and writes nothing.
    before = chef.stats.snapshot()
    assert crowbar.proposals.commit("sprocket", "default").status == "unchanged"
    assert chef.stats.snapshot()["writes"] == before["writes"]
