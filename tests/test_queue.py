"""The queue: why a commit waits, and that it proceeds on its own."""

from __future__ import annotations

import pytest

from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.model.naming import node_role_name


def test_machines_not_ready_queue_the_commit_with_reasons(crowbar, fleet, chef):
    names = fleet.add(3, "compute")
    fleet.boot(names)  # paused at discovered, unallocated
    proposal = crowbar.proposals.create("widget", "default")
    result = crowbar.proposals.commit("widget", "default")
    assert result.status == "queued"
    assert result.reasons == [
        "3 machine(s) not ready yet: " + ", ".join(f"{n} (discovered, waiting for allocation)" for n in names)]
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "pending" and f"{names[0]} (discovered)" in status.detail
    queue = crowbar.queue.items()
    assert [(i["barclamp"], i["inst"], i["revision"]) for i in queue] == [("widget", "default", 1)]
    # A queued proposal allocates its machines, and says so on them.
    for name in names:
        data = chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]
        assert data["allocated"] is True
        assert data["pending"]["widget-default"] == proposal.elements_of(name)
    assert chef.roles.find("widget-config-default") is None
    # Committing again while still blocked writes nothing new.
    before = chef.stats.snapshot()["writes"]
    assert crowbar.proposals.commit("widget", "default").status == "queued"
    assert chef.stats.snapshot()["writes"] == before


def test_queued_proposal_applies_once_its_machines_are_ready(crowbar, fleet, chef):
    names = fleet.add(2, "compute")
    fleet.boot(names)
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").queued
    fleet.boot(names[:1])  # allocated by the queue: it proceeds to ready
    assert crowbar.queue.items() and chef.roles.find("widget-config-default") is None
    explained = crowbar.queue.explain()[0]["reasons"]
    assert explained == [f"1 machine(s) not ready yet: {names[1]} (discovered)"]
    fleet.boot(names[1:])  # the last machine becomes ready: the queue runs
    assert crowbar.queue.items() == []
    assert chef.roles.find("widget-config-default") is not None
    for name in names:
        data = chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]
        assert "widget-default" not in data["pending"]
        assert "widget-agent" in data["run_list_map"]
    assert crowbar.proposals.status("widget", "default").status == "ready"


def test_a_dependency_not_applied_queues_and_its_commit_releases(crowbar, fleet, chef):
    fleet.ready(2, "compute")
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"depends_on": "default"})
    result = crowbar.proposals.commit("widget", "default")
    assert result.reasons == ["depends on gizmo/default, which does not exist: create and commit it"]
    crowbar.proposals.create("gizmo", "default")
    assert crowbar.queue.explain()[0]["reasons"] == [
        "depends on gizmo/default, which is not applied yet: commit it"]
    assert crowbar.proposals.commit("gizmo", "default").status == "applied"
    assert crowbar.queue.items() == []
    assert crowbar.proposals.status("widget", "default").status == "ready"


def test_a_dependency_cycle_is_refused_when_saved(crowbar, fleet, chef):
    crowbar.proposals.create("widget", "default", from_inventory=False)
    crowbar.proposals.set("widget", "default", {"depends_on": "default"})
    crowbar.proposals.create("gizmo", "default", from_inventory=False)
    before = chef.stats.snapshot()["writes"]
    with pytest.raises(ValidationError, match="dependency cycle: gizmo/default -> widget/default -> gizmo/default"):
        crowbar.proposals.set("gizmo", "default", {"after": "default"})
    assert chef.stats.snapshot()["writes"] == before


def test_dequeue_clears_the_pending_marks(crowbar, fleet, chef):
    names = fleet.add(2, "compute")
    fleet.boot(names)
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    crowbar.proposals.dequeue("widget", "default")
    assert crowbar.queue.items() == []
    for name in names:
        assert chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]["pending"] == {}
    assert crowbar.proposals.status("widget", "default").status == "hold"
    with pytest.raises(NotFoundError, match="is not queued"):
        crowbar.proposals.dequeue("widget", "default")


def test_deleted_queued_proposal_leaves_the_queue(crowbar, fleet):
    names = fleet.add(1, "compute")
    fleet.boot(names)
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    crowbar.proposals.delete("widget", "default")
    assert crowbar.queue.items() == []
