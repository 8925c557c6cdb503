"""Stored documents come back as they were saved, whatever their values look like, and a
damaged parts bag gets one clear line, never a traceback.

A value shaped like a parts reference (``{"crowbar-parts": [...]}``: ceph's
``osd_devices`` of one machine named ``crowbar-parts`` is such a value) was taken
for one when read back: the proposal then failed to load ("parts missing") or,
naming another proposal's part, read that part's content as its own.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barclamp_sdk import Crowbar
from barclamp_sdk.model.naming import config_role_name
from barclamp_sdk.model.parts import ESCAPE_KEY, PARTS_BAG, PARTS_KEY, join, split
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

LOOKS_LIKE_A_REFERENCE = {PARTS_KEY: ["sdb", "sdc"]}
LOOKS_LIKE_AN_ESCAPE = {ESCAPE_KEY: {PARTS_KEY: ["sdd"]}}


@pytest.mark.parametrize("value", [
    LOOKS_LIKE_A_REFERENCE, LOOKS_LIKE_AN_ESCAPE, {"a": [LOOKS_LIKE_A_REFERENCE, {ESCAPE_KEY: 1}]},
    {PARTS_KEY: "not a list"}, {ESCAPE_KEY: LOOKS_LIKE_AN_ESCAPE},
])
@pytest.mark.parametrize("limit", [100_000, 20])  # whole, and split into parts
def test_values_shaped_like_references_round_trip_through_split_and_join(value, limit):
    document = {"id": "bc-widget-default", "attributes": {"widget": {"disks": value, "big": list(range(50))}}}
    head, parts = split(document, "bc-widget-default", limit=limit)
    assert join(head, lambda ids: {i: parts[i] for i in ids if i in parts}) == document


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.text(max_size=3), max_size=3),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from([PARTS_KEY, ESCAPE_KEY, "a", "b"]), children, max_size=3),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(value=JSON, limit=st.sampled_from([10, 40, 100_000]))
def test_any_value_round_trips_through_split_and_join(value, limit):
    document = {"id": "bc-widget-default", "value": value}
    head, parts = split(document, "bc-widget-default", limit=limit)
    assert join(head, lambda ids: {i: parts[i] for i in ids if i in parts}) == document


def test_a_proposal_value_shaped_like_a_reference_is_saved_committed_and_read_back(crowbar, fleet, chef,
                                                                                     barclamps_under_test):
    fleet.ready(1, "compute")
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"disks": LOOKS_LIKE_A_REFERENCE, "tags": ["x"]})
    assert crowbar.proposals.get("widget", "default").attributes["disks"] == LOOKS_LIKE_A_REFERENCE
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    # A fresh client (no cache) reads the same from the server: document, history, applied revision.
    fresh = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)
    assert fresh.proposals.get("widget", "default").attributes["disks"] == LOOKS_LIKE_A_REFERENCE
    assert fresh.proposals.applied("widget", "default").attributes["disks"] == LOOKS_LIKE_A_REFERENCE
    assert [h["revision"] for h in fresh.proposals.history("widget", "default")] == [1, 2]
    # Chef admins see the escape in the config role, as docs/chef-admin.md says.
    role = chef.roles.get(config_role_name("widget", "default"))
    assert role["default_attributes"]["widget"]["disks"] == {ESCAPE_KEY: LOOKS_LIKE_A_REFERENCE}


def _split_proposal(crowbar):
    crowbar.proposals.create("widget", "default")
    disks = {f"machine-{i:05d}.example.com": ["sdb", "sdc", "sdd"] for i in range(4000)}  # ~200 KB: split
    crowbar.proposals.set("widget", "default", {"disks": disks})
    return disks


@pytest.mark.parametrize("damage, says", [
    ("delete", "missing from data bag crowbar_parts"),
    ("entries", "has entries that are not an object"),
    ("kind", "has kind 'blob'"),
])
def test_a_damaged_part_gets_one_line_naming_the_item(crowbar, chef, cli, damage, says):
    _split_proposal(crowbar)
    part_id = sorted(chef.data_bags.items(PARTS_BAG))[0]
    item = chef.data_bags.get_item(PARTS_BAG, part_id)
    if damage == "delete":
        chef.data_bags.delete_item(PARTS_BAG, part_id)
    else:
        item.update({"entries": "garbage"} if damage == "entries" else {"kind": "blob"})
        chef.data_bags.update_item(PARTS_BAG, item)
    out, err = cli("widget", "proposal", "show", "default", expect=1)
    assert says in err and part_id in err and "Traceback" not in err and "internal error" not in err, err
    assert err.count("\n") == 1, err
