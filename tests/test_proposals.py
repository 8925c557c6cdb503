"""Proposals: create from inventory, edit, validate, revisions, diff."""

from __future__ import annotations

import pytest

from barclamp_sdk.errors import NotFoundError, RevisionConflict, ValidationError


@pytest.fixture
def ready(fleet):
    """Four ready machines: three compute servers and a storage server."""
    return fleet.ready(3, "compute") + fleet.ready(1, "storage")


def writes(chef):
    return chef.stats.snapshot()["writes"]


def test_create_from_inventory_in_crowbars_shape(crowbar, ready, chef):
    proposal = crowbar.proposals.create("widget", "default")
    item = chef.data_bags.get_item("crowbar", "bc-widget-default")
    deployment = item["deployment"]["widget"]
    assert deployment["crowbar-revision"] == 1
    assert deployment["element_order"] == [["widget-server"], ["widget-agent", "widget-store"]]
    assert deployment["element_run_list_order"] == {"widget-server": 50, "widget-agent": 52, "widget-store": 51}
    assert deployment["element_states"]["widget-agent"] == ["readying", "ready", "applying"]
    assert deployment["config"] == {"environment": "widget-config-default", "mode": "full",
                                    "transitions": False, "transition_list": []}
    assert deployment["elements"]["widget-agent"] == sorted(ready)
    assert deployment["elements"]["widget-store"] == [ready[3]]
    assert item["attributes"]["widget"]["port"] == 8080
    assert item["notes"] and "most memory" in item["notes"][0]
    assert proposal.revision == 1


def test_secrets_set_in_a_proposal_are_stored_encrypted(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    item = chef.data_bags.get_item("crowbar", "bc-widget-default")
    ref = item["attributes"]["widget"]["password"]
    assert ref["data_bag"] == "crowbar_secrets" and ref["key"] == "password"
    assert ref["item"].startswith("widget-default--")  # a version of the proposal's secrets
    stored = chef.data_bags.get_item("crowbar_secrets", ref["item"])
    assert stored["password"]["version"] == 3 and "generated" not in str(stored)
    assert crowbar.secrets.get(item["attributes"]["widget"]["password"]) == "generated-default"


@pytest.mark.parametrize("name,message", [
    ("bad-name", "use only letters, digits and '_'"),
    ("template", "reserved"),
    ("", "empty"),
    ("a" * 65, "longer than 64"),
])
def test_bad_proposal_names_are_refused_and_nothing_written(crowbar, ready, chef, name, message):
    before = writes(chef)
    with pytest.raises(ValidationError, match=message):
        crowbar.proposals.create("widget", name)
    assert writes(chef) == before


def test_unknown_barclamp_lists_the_known_ones(crowbar, chef):
    before = writes(chef)
    with pytest.raises(NotFoundError, match="unknown barclamp 'nope'; available: ") as info:
        crowbar.proposals.create("nope", "default")
    assert "gizmo" in str(info.value) and "widget" in str(info.value) and "nova" in str(info.value)
    assert writes(chef) == before


def test_existing_proposal_cannot_be_created_again(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    with pytest.raises(ValidationError, match="already exists"):
        crowbar.proposals.create("widget", "default")


def test_set_types_values_by_the_model_and_keeps_every_revision(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    proposal = crowbar.proposals.set("widget", "default", {
        "port": "9090", "mode": "fast", "nested.depth": "5", "tags": "[a, b]", "nested.label": "007"})
    assert proposal.attributes["port"] == 9090 and proposal.attributes["tags"] == ["a", "b"]
    assert proposal.attributes["nested"] == {"depth": 5, "label": "007"}
    assert proposal.revision == 2
    proposal = crowbar.proposals.set("widget", "default", unset=["port"])
    assert proposal.attributes["port"] == 8080 and proposal.revision == 3
    history = crowbar.proposals.history("widget", "default")
    assert [h["revision"] for h in history] == [1, 2, 3]
    assert history[1]["change"].startswith("set port, set mode")
    assert crowbar.proposals.revision("widget", "default", 2).attributes["port"] == 9090


def test_a_typo_lists_valid_keys_and_writes_nothing(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    before = writes(chef)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("widget", "default", {"prot": "1"})
    assert "did you mean port?" in str(info.value) and "nested.depth" in str(info.value)
    assert writes(chef) == before


@pytest.mark.parametrize("values,message", [
    ({"port": "99999"}, "attributes.widget.port: Input should be less than or equal to 65535"),
    ({"port": "eighty"}, "attributes.widget.port: Input should be a valid integer"),
    ({"mode": "turbo"}, "attributes.widget.mode: Input should be 'fast' or 'safe'"),
    ({"mode": "fast", "port": "80"}, "mode fast cannot use port 80"),
    ({"elements.widget-server": "a.example.com,b.example.com"}, "widget-server needs exactly 1"),
    ({"elements.widget-agent": "nope.example.com"}, "unknown machine 'nope.example.com'"),
    ({"elements.widget-nope": "x"}, "has no element 'widget-nope'"),
])
def test_schema_violations_are_refused_and_nothing_written(crowbar, ready, chef, values, message):
    crowbar.proposals.create("widget", "default")
    before = writes(chef)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("widget", "default", values)
    errors = getattr(info.value, "errors", [str(info.value)])
    assert any(message in error for error in errors), errors
    assert writes(chef) == before
    assert crowbar.proposals.get("widget", "default").revision == 1


def test_whole_document_edits_detect_a_stale_base(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    document = crowbar.proposals.get("widget", "default").to_dict()
    crowbar.proposals.set("widget", "default", {"port": "1234"})
    document["attributes"]["widget"]["port"] = 4321
    with pytest.raises(RevisionConflict, match="changed since you read it \\(revision 1 -> 2\\)"):
        crowbar.proposals.replace("widget", "default", document)
    document["deployment"]["widget"]["crowbar-revision"] = 2
    assert crowbar.proposals.replace("widget", "default", document).attributes["port"] == 4321


def test_whole_document_with_unknown_keys_is_refused(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    document = crowbar.proposals.get("widget", "default").to_dict()
    document["attributes"]["widget"]["colour"] = "blue"
    with pytest.raises(ValidationError, match="attributes.widget.colour: unknown setting"):
        crowbar.proposals.replace("widget", "default", document)
    document = crowbar.proposals.get("widget", "default").to_dict()
    document["id"] = "bc-widget-other"
    with pytest.raises(ValidationError, match="id must stay"):
        crowbar.proposals.replace("widget", "default", document)


def test_an_edit_that_changes_nothing_makes_no_revision(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    before = writes(chef)
    proposal = crowbar.proposals.set("widget", "default", {"port": "8080"})
    assert proposal.revision == 1
    assert writes(chef) == before


def test_diff_between_revisions_and_against_what_is_applied(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    crowbar.proposals.set("widget", "default", {"mode": "fast"})
    changes = crowbar.proposals.diff("widget", "default", 1, 2).changes
    assert [str(c) for c in changes] == ["~ attributes.widget.port: 8080 -> 9000"]
    result = crowbar.proposals.diff("widget", "default", 1)
    assert {c.path for c in result.changes} == {"attributes.widget.port", "attributes.widget.mode"}
    assert "-      \"port\": 8080" in result.text and "+      \"port\": 9000" in result.text
    uncommitted = crowbar.proposals.diff("widget", "default")
    assert uncommitted.old_label == "not committed"
    crowbar.proposals.commit("widget", "default")
    assert crowbar.proposals.diff("widget", "default").changes == []
    crowbar.proposals.set("widget", "default", {"port": "9001"})
    assert [c.path for c in crowbar.proposals.diff("widget", "default").changes] == ["attributes.widget.port"]
    with pytest.raises(NotFoundError, match="no revision 99"):
        crowbar.proposals.diff("widget", "default", 99)


def test_list_and_status(crowbar, ready):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.create("gizmo", "default")
    listed = crowbar.proposals.list()
    assert [(p["barclamp"], p["name"], p["status"]) for p in listed] == [
        ("gizmo", "default", "hold"), ("widget", "default", "hold")]
    assert [p["name"] for p in crowbar.proposals.list("widget")] == ["default"]
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "hold" and status.detail == "never committed"


def test_delete(crowbar, ready, chef):
    crowbar.proposals.create("widget", "scratch")
    crowbar.proposals.set("widget", "scratch", {"port": "1"})
    crowbar.proposals.delete("widget", "scratch")
    assert chef.data_bags.find_item("crowbar", "bc-widget-scratch") is None
    assert not [i for i in chef.data_bags.items("crowbar_history") if i.startswith("widget-scratch-")]
    crowbar.proposals.create("widget", "committed")
    crowbar.proposals.commit("widget", "committed")
    with pytest.raises(ValidationError, match="deactivate it first"):
        crowbar.proposals.delete("widget", "committed")
