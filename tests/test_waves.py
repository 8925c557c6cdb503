"""Commits in waves, against the real server: machines converge (or fail) in a simulated
chef-client daemon; the rollout waits for their reports, spends its failure budget, stops,
records it, and resumes."""

from __future__ import annotations

import time

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.progress import Phase
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.terminal import in_terminal
from tests.support.widgets import TEST_BARCLAMPS


@pytest.fixture
def api(chef) -> Crowbar:
    """The API on its own client (its requests counted apart from the fleet's), polling node
    reports often (the machines here converge within a second)."""
    return Crowbar(ChefClient(chef.config), barclamps=TEST_BARCLAMPS, secret=TEST_SECRET, run_poll_interval=0.3)


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
        before = api.chef.stats.snapshot()["by_endpoint"]
        result = api.proposals.commit("widget", "default", wave=5, max_failures=2, timeout=300,
                                      phases=phases.append)
        after = api.chef.stats.snapshot()["by_endpoint"]
        sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        print("requests of the rollout:", sent)
        # Waiting reads nodes by name, never search (which may lag behind writes).
        assert not any("search" in endpoint for endpoint in sent), sent
        assert sent["GET /nodes/*"] >= 20 - len(wave[5])
        assert result.status == "stopped"
        why = result.reasons[0]
        assert "stopped after wave 4 of 5" in why and "3 machine(s) failed (budget 2)" in why
        assert wave[4][0] in why and "disk full" in why
        # Wave 5 was never written; waves 1 to 4 were.
        assert not any(holds_widget(chef, n) for n in wave[5])
        assert all(holds_widget(chef, n) for n in [names[0], *wave[2], *wave[3], *wave[4]])
        # Recorded with the data, not derived from a lock.
        assert api.locks.inspect("proposal-widget-default") is None
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
        # A run already ending when the fix came may still report the failure: resume once each
        # fixed machine has reported a successful run (a condition, not a timer).
        fixed = [wave[2][1], wave[4][0], wave[4][3]]
        deadline = time.monotonic() + 300
        while not all((chef.nodes.get(n)["automatic"].get("crowbar_wall") or {}).get("last_run", {}).get("success")
                      for n in fixed):
            assert time.monotonic() < deadline, "the fixed machines never reported a successful run"
            time.sleep(0.2)
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


def test_the_command_shows_phases_on_a_terminal_exits_4_on_a_stopped_rollout_and_status_shows_waves(
        crowbar, chef, fleet, crowbar_env, crowbar_cli):
    names = fleet.ready(3, "compute")
    server, agents = names[0], sorted(names[1:])
    crowbar.proposals.create("widget", "default", from_inventory=False, fill=lambda p: (
        p.assign("widget-server", server), p.assign("widget-agent", *agents)))
    fleet.failing = {agents[0]: "E: simulated"}
    with fleet.chef_client_daemon(names, interval=0.3):
        code, out, terminal = in_terminal(
            ["widget", "proposal", "commit", "default", "--wave", "2", "--max-failures", "1", "--timeout", "300"],
            crowbar_env)
    assert code == 4, (out, terminal)
    assert out.strip().count("\n") == 0 and out.startswith("stopped: rollout of widget/default r1 stopped after "
                                                           "wave 2 of 2: 1 machine(s) failed (budget 1)")
    for phase in ("committing widget/default: locking", "validating", "writing", "waiting for wave 1 of 2",
                  "waiting for wave 2 of 2"):
        assert phase in terminal, (phase, terminal)
    code, out, err = crowbar_cli("widget", "proposal", "status", "default")
    assert code == 0
    assert "rollout of r1: stopped, waves of 2, at most 1 failure(s)" in out
    assert "wave 1: batch 0, 1 machine(s), converged" in out and "wave 2: batch 1, 2 machine(s), failed, 1 failed" in out
    assert f"{agents[0]}: failed: E: simulated" in out

    # JSON mode: the result on stdout, no progress; exit 4 all the same (the failure still fails).
    with fleet.chef_client_daemon(names, interval=0.3):
        code, out, terminal = in_terminal(["widget", "proposal", "commit", "default", "--json"], crowbar_env)
    assert code == 4 and '"status": "stopped"' in out and "locking" not in terminal
    fleet.failing.clear()
    with fleet.chef_client_daemon(names, interval=0.3):
        code, out, err = crowbar_cli("widget", "proposal", "commit", "default", "--wave", "2", "--json")
    assert code == 0 and '"status": "applied"' in out

    code, out, terminal = in_terminal(["widget", "proposal", "deactivate", "default"], crowbar_env)
    assert code == 0 and "deactivated widget/default: 3 machine role(s) written" in out
    assert "deactivating widget/default: locking" in terminal and "writing" in terminal


def test_sim_converge_all_and_a_failing_machine(crowbar_cli, fleet, chef):
    names = fleet.ready(2, "compute")
    code, out, err = crowbar_cli("sim", "converge", "--all", "--fail", names[1], "--json")
    assert code == 0, err
    assert '"failed": [\n    "%s"' % names[1] in out
    runs = {n: chef.nodes.get(n)["automatic"]["crowbar_wall"]["last_run"] for n in names}
    assert runs[names[0]]["success"] is True and runs[names[1]]["success"] is False
    assert runs[names[1]]["error"].startswith("simulated failure")
    code, out, err = crowbar_cli("sim", "converge", names[0], "--all")
    assert code == 2 and "not both" in err


def test_rollout_options_without_a_wave_are_one_clear_error_writing_nothing(crowbar, crowbar_cli, chef):
    crowbar.proposals.create("widget", "default", from_inventory=False)
    code, out, err = crowbar_cli("widget", "proposal", "commit", "default", "--max-failures", "2")
    assert code == 1 and err.strip() == "error: --max-failures and --timeout need --wave SIZE (or a rollout block with wave)"
    code, out, err = crowbar_cli("widget", "proposal", "commit", "default", "--wave", "0")
    assert code == 2 and "--wave" in err
    assert chef.roles.find("widget-config-default") is None
    assert crowbar.proposals.get("widget", "default").deployment.get("crowbar-status") is None


def test_without_a_terminal_each_wave_wait_is_one_line_on_stderr(crowbar, fleet, crowbar_cli):
    """A wrapper script's log shows what a rollout waits for (a wave may wait an hour), a line
    per wave and no redrawn progress; JSON mode stays silent (the test above)."""
    names = fleet.ready(3, "compute")
    crowbar.proposals.create("widget", "default", from_inventory=False, fill=lambda p: (
        p.assign("widget-server", names[0]), p.assign("widget-agent", *names[1:])))
    with fleet.chef_client_daemon(names, interval=0.3):
        code, out, err = crowbar_cli("widget", "proposal", "commit", "default", "--wave", "2", "--timeout", "300")
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["waiting for wave 1 of 2", "waiting for wave 2 of 2"], err
    assert all(line.startswith("committing widget/default: ") for line in lines), err
