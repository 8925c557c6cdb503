"""Commits in waves, against the real server: machines converge (or fail) in a simulated
chef-client daemon; the rollout waits for their reports, spends its failure budget, stops,
records it, and resumes."""

from __future__ import annotations

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.progress import Phase
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


@pytest.fixture
def api(chef) -> Crowbar:
    """The API, polling node reports often (the machines here converge within a second)."""
    return Crowbar(chef, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET, run_poll_interval=0.3)


@pytest.fixture
def machines(chef, api) -> tuple[Fleet, list[str]]:
    fleet = Fleet(chef, crowbar=api)
    return fleet, fleet.ready(20, "compute")


def holds_widget(chef, node: str) -> bool:
    run_list_map = chef.roles.get(node_role_name(node))["default_attributes"]["crowbar"]["run_list_map"]
    return any(entry.get("proposal") == "widget-default" for entry in run_list_map.values())


def test_a_rollout_stops_after_the_wave_that_spent_the_budget_records_it_and_resumes(api, chef, machines):
    fleet, names = machines
    proposal = api.proposals.create("widget", "default", from_inventory=False, fill=lambda p: (
        p.assign("widget-server", names[0]), p.assign("widget-agent", *names[1:])))
    assert proposal.nodes() and set(proposal.nodes()) == set(names)
    # Waves of 5: the server alone (batch 0), then the 19 agents: 5, 5, 5, 4 (batch 1).
    agents = sorted(names[1:])
    wave = {2: agents[0:5], 3: agents[5:10], 4: agents[10:15], 5: agents[15:19]}
    fleet.failing = {wave[2][1]: "E: package widget-agent not found",
                     wave[4][0]: "E: disk full", wave[4][3]: "E: disk full"}
    phases: list[Phase] = []
    with fleet.chef_client_daemon(names, interval=0.3):
        result = api.proposals.commit("widget", "default", wave=5, max_failures=2, timeout=300,
                                      phases=phases.append)
        assert result.status == "stopped"
        why = result.reasons[0]
        assert "stopped after wave 4 of 5" in why and "3 machine(s) failed (budget 2)" in why
        assert wave[4][0] in why and "disk full" in why
        # Wave 5 was never written; waves 1 to 4 were.
        assert not any(holds_widget(chef, n) for n in wave[5])
        assert all(holds_widget(chef, n) for n in [names[0], *wave[2], *wave[3], *wave[4]])
        # Recorded with the data, not derived from a lock.
        assert api.locks.inspect(f"proposal-widget-default") is None
        status = api.proposals.status("widget", "default")
        assert status.status == "failed" and "stopped after wave 4 of 5" in status.detail
        record = status.rollout
        assert record["status"] == "stopped" and record["plan"] == {"wave": 5, "max_failures": 2, "timeout": 300.0}
        assert [w["status"] for w in record["waves"]] == ["converged", "failed", "converged", "failed", "pending"]
        assert record["waves"][1]["failed"] == {wave[2][1]: "failed: E: package widget-agent not found"}
        assert set(record["waves"][3]["failed"]) == {wave[4][0], wave[4][3]}
        labels = [p.label for p in phases]
        assert "waiting" in {p.name for p in phases}
        assert any(label.startswith("waiting for wave 4 of 5") for label in labels)
        assert not any(label.startswith("waiting for wave 5") for label in labels)
        assert {"locking", "validating", "writing"} <= {p.name for p in phases}

        # The operator fixes the machines; their daemons' next runs succeed; committing again resumes.
        fleet.failing.clear()
        phases.clear()
        resumed = api.proposals.commit("widget", "default", wave=5, max_failures=2, timeout=300,
                                       phases=phases.append)
    assert resumed.status == "applied"
    assert resumed.machines_written == len(wave[5])  # the waves written before are not written again
    assert all(holds_widget(chef, n) for n in names)
    labels = [p.label for p in phases]
    assert not any(label.startswith(("waiting for wave 1 ", "waiting for wave 3 ")) for label in labels)
    status = api.proposals.status("widget", "default")
    assert (status.status, status.applied_revision) == ("ready", proposal.revision)
    assert status.rollout["status"] == "done"
    assert [w["status"] for w in status.rollout["waves"]] == ["converged"] * 5


def test_a_machine_that_never_runs_times_out_and_the_plan_comes_from_the_document(api, chef, machines):
    fleet, names = machines
    server, agents = names[0], names[1:4]
    api.proposals.create("widget", "default", from_inventory=False, fill=lambda p: (
        p.assign("widget-server", server), p.assign("widget-agent", *agents)))
    api.proposals.update("widget", "default", lambda p: p.deployment.__setitem__(
        "rollout", {"wave": 2, "max_failures": 1, "timeout": 1}))
    fleet.stalled = {server}  # switched off: its wave (the server alone, batch 0) can only time out
    with fleet.chef_client_daemon(names[:4], interval=0.3):
        result = api.proposals.commit("widget", "default")
    assert result.status == "stopped"
    assert "stopped after wave 1 of 3" in result.reasons[0]
    record = api.proposals.status("widget", "default").rollout
    assert record["plan"] == {"wave": 2, "max_failures": 1, "timeout": 1.0}
    assert record["waves"][0]["failed"] == {server: "timed out: no chef-client run reported within 1s"}
    assert not any(holds_widget(chef, n) for n in agents)
    # The rollout plan is the proposal's, not the recipes': the config role does not carry it.
    assert "rollout" not in chef.roles.get("widget-config-default")["override_attributes"]["widget"]


def test_a_blocked_rollout_writes_nothing_and_is_not_queued(api, chef, fleet):
    names = fleet.ready(2, "compute")
    api.proposals.create("widget", "default", from_inventory=False, settings={"depends_on": "default"},
                         fill=lambda p: p.assign("widget-server", names[0]))
    with pytest.raises(ValidationError) as caught:
        api.proposals.commit("widget", "default", wave=1)
    assert "is not queued" in str(caught.value) and "\n" not in str(caught.value)
    assert not api.queue.items() and not holds_widget(chef, names[0])
