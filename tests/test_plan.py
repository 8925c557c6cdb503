"""Commit planning is pure: these tests run it on documents and role dicts, without a server."""

from __future__ import annotations

import copy

import pytest

from barclamp_sdk import CrowbarError
from barclamp_sdk.model.cluster import record_from_role
from barclamp_sdk.model.commit.plan import (
    batch_of,
    change_role,
    changed_nodes,
    config_role,
    config_role_drifted,
    desired,
    machine_mutation,
    removal,
)
from barclamp_sdk.model.noderoles import DRIFT, new_node_role, seal
from tests.support.widgets import widget_proposal

A, B, C = "a.example.com", "b.example.com", "c.example.com"


proposal = widget_proposal


def role(node: str, state: str = "ready") -> dict:
    return new_node_role(node, state)


def test_desired_entries_claims_and_config_role():
    p = proposal(widget_server=[A], widget_agent=[A, B], widget_store=[B])
    p.attributes["disks"] = {B: ["sdb"], C: ["sdc"]}  # C holds no element: its claim is ignored
    wanted = desired(p)
    assert set(wanted.entries) == {A, B}
    assert wanted.entries[A]["widget-server"] == {"priority": 50, "states": ["readying", "ready", "applying"],
                                                  "proposal": "widget-default"}
    assert wanted.entries[A]["widget-config-default"]["proposal"] == "widget-default"
    assert wanted.claims == {B: {"sdb": "widget-default"}}
    assert wanted.config["name"] == "widget-config-default"
    assert wanted.config == config_role(p)


def test_plans_fall_in_element_order_batches():
    p = proposal(widget_server=[A], widget_agent=[B], widget_store=[C])
    wanted = desired(p)
    plans = {n: wanted.plan_for(n, None) for n in (A, B, C)}
    assert {n: plan.batch for n, plan in plans.items()} == {A: 0, B: 1, C: 1}
    assert wanted.batches(plans) == {0: [A], 1: [B, C]}
    assert batch_of(p.definition, {"widget-store"}) == 1 and batch_of(p.definition, set()) == 0


def test_a_mutation_adds_then_changes_nothing_the_second_time():
    p = proposal(widget_server=[A], widget_agent=[A])
    p.attributes["disks"] = {A: ["sdb"]}
    wanted = desired(p)
    body = role(A)
    assert machine_mutation("widget-default", wanted.plan_for(A, None))(body)
    data = body["default_attributes"]["crowbar"]
    assert set(data["run_list_map"]) == {"widget-server", "widget-agent", "widget-config-default"}
    assert data["claimed_disks"] == {"sdb": "widget-default"} and data["allocated"] is True
    seal(body)  # as the role store does when it writes a role
    record = record_from_role(body)
    assert wanted.satisfied(record)
    assert not machine_mutation("widget-default", wanted.plan_for(A, record))(copy.deepcopy(body))


def test_a_mutation_refuses_what_another_proposal_owns():
    body = role(A)
    body["default_attributes"]["crowbar"]["run_list_map"] = {
        "widget-server": {"proposal": "widget-other", "priority": 50, "states": ["ready"]}}
    body["default_attributes"]["crowbar"]["claimed_disks"] = {"sdb": "gizmo-default"}
    p = proposal(widget_server=[A])
    with pytest.raises(CrowbarError, match="already has widget-server from proposal widget-other"):
        machine_mutation("widget-default", desired(p).plan_for(A, None))(copy.deepcopy(body))
    p = proposal(widget_agent=[A])
    p.attributes["disks"] = {A: ["sdb"]}
    with pytest.raises(CrowbarError, match="disk sdb on a.example.com is claimed by gizmo-default"):
        machine_mutation("widget-default", desired(p).plan_for(A, None))(copy.deepcopy(body))


def test_removal_takes_back_only_its_own():
    body = role(A)
    machine_mutation("widget-default", desired(proposal(widget_agent=[A])).plan_for(A, None))(body)
    body["default_attributes"]["crowbar"]["run_list_map"]["gizmo-node"] = {
        "proposal": "gizmo-default", "priority": 40, "states": ["ready"]}
    assert removal("widget-default", A)(body)
    assert set(body["default_attributes"]["crowbar"]["run_list_map"]) == {"gizmo-node"}
    assert not removal("widget-default", A)(body)


def test_changed_nodes_between_revisions():
    old = proposal(widget_server=[A], widget_agent=[A, B])
    new = proposal(widget_server=[A], widget_agent=[A, C])
    assert changed_nodes(new, old) == {B, C}
    assert changed_nodes(old, old) == set()


def test_drift_marks_and_fingerprints():
    p = proposal(widget_server=[A])
    config = config_role(p)
    assert not config_role_drifted(config, "widget")
    config["default_attributes"]["widget"]["port"] = 1
    assert config_role_drifted(config, "widget")
    body = role(A)
    body["default_attributes"]["crowbar"][DRIFT] = {"detected_at": "now"}
    plan = desired(p).plan_for(A, None)
    assert change_role("widget-default", plan, body, drifted=True)
    assert DRIFT not in body["default_attributes"]["crowbar"]
