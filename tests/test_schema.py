"""The strict proposal document schema (barclamp_sdk.model.schema): pure, every problem with its path."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.schema import ProposalSchema, check_document
from tests.support.widgets import TEST_BARCLAMPS, Widget, WidgetAttributes

SCHEMA = ProposalSchema("widget", ("widget-server", "widget-agent", "widget-store"), WidgetAttributes)


def template() -> dict:
    return Widget().template("default")


def test_templates_of_every_installed_barclamp_pass():
    registry = BarclampRegistry(TEST_BARCLAMPS)
    for barclamp in registry.all():
        schema = ProposalSchema(barclamp.name, tuple(e.name for e in barclamp.elements), barclamp.Attributes)
        assert schema.check(barclamp.template("default"), name="default") == [], barclamp.name
    assert SCHEMA.check(template(), name="default") == []


def test_a_committed_document_passes():
    document = template()
    deployment = document["deployment"]["widget"]
    deployment.update({"crowbar-revision": 4, "crowbar-status": "failed", "crowbar-failed": "x: boom",
                       "crowbar-queued": True})
    deployment["elements"]["widget-server"] = ["d1.example.com"]
    document["notes"] = ["server on d1"]
    document.update(chef_type="data_bag_item", data_bag="crowbar")
    assert SCHEMA.check(document, name="default") == []


@pytest.mark.parametrize("path, value, problem", [
    (("id",), 3, "id: must be a string bc-widget-NAME"),
    (("id",), "bc-widget-other", "id: the document's id must stay 'bc-widget-default'"),
    (("description",), {"a": 1}, "description: must be a string"),
    (("notes",), "x", "notes: must be a list of strings"),
    (("notes",), ["ok", {"a": 1}], "notes[1]: must be a string"),
    (("attributes",), [], "attributes: must be an object holding only 'widget'"),
    (("attributes", "widget"), "x", "attributes.widget: must be an object of settings"),
    (("attributes", "widget", "port"), 0, "attributes.widget.port: Input should be greater than or equal to 1"),
    (("attributes", "widget", "nope"), 1, "attributes.widget.nope: unknown setting"),
    (("attributes", "nova"), {}, "attributes.nova: not allowed in a widget proposal (only attributes.widget)"),
    (("deployment",), "x", "deployment: must be an object holding only 'widget'"),
    (("deployment", "nova"), {}, "deployment.nova: not allowed in a widget proposal"),
    (("deployment", "widget"), [], "deployment.widget: must be an object"),
    (("deployment", "widget", "crowbar-revision"), "abc", "deployment.widget.crowbar-revision: must be an integer >= 0"),
    (("deployment", "widget", "crowbar-revision"), -1, "deployment.widget.crowbar-revision: must be an integer >= 0"),
    (("deployment", "widget", "crowbar-revision"), True, "deployment.widget.crowbar-revision: must be an integer >= 0"),
    (("deployment", "widget", "crowbar-status"), "great", "deployment.widget.crowbar-status: must be one of"),
    (("deployment", "widget", "crowbar-queued"), "yes", "deployment.widget.crowbar-queued: must be true or false"),
    (("deployment", "widget", "elements"), [], "deployment.widget.elements: must map element names"),
    (("deployment", "widget", "elements", "widget-agent"), "d1", "deployment.widget.elements.widget-agent: must be a list"),
    (("deployment", "widget", "elements", "gadget"), [], "deployment.widget.elements.gadget: unknown element 'gadget'"),
    (("deployment", "widget", "element_order"), "x",
     "deployment.widget.element_order: must be a list of lists of element names"),
    (("deployment", "widget", "element_order"), ["widget-server"],
     "deployment.widget.element_order: must be a list of lists of element names"),
    (("deployment", "widget", "element_order"), [["widget-server", "gadget"]],
     "deployment.widget.element_order[0][1]: unknown element 'gadget'"),
    (("deployment", "widget", "element_order"), [[3]], "deployment.widget.element_order[0][0]: must be an element name"),
    (("deployment", "widget", "element_states"), "x", "deployment.widget.element_states: must map element names"),
    (("deployment", "widget", "element_states", "widget-agent"), "ready",
     "deployment.widget.element_states.widget-agent: must be a list of states"),
    (("deployment", "widget", "element_run_list_order"), "high",
     "deployment.widget.element_run_list_order: must map element names to integers"),
    (("deployment", "widget", "element_run_list_order", "widget-agent"), "high",
     "deployment.widget.element_run_list_order.widget-agent: must be an integer"),
    (("deployment", "widget", "config"), "x", "deployment.widget.config: must be an object"),
    (("deployment", "widget", "config", "environment"), "_default",
     "deployment.widget.config.environment: must not be Chef's '_default'"),
    (("deployment", "widget", "config", "environment"), 7, "deployment.widget.config.environment: must be a non-empty"),
    (("deployment", "widget", "config", "transitions"), "no", "deployment.widget.config.transitions: must be true or false"),
    (("deployment", "widget", "config", "transition_list"), [1], "deployment.widget.config.transition_list: must be a list"),
    (("deployment", "widget", "config", "colour"), "red", "deployment.widget.config.colour: unknown key"),
    (("deployment", "widget", "extra"), 1, "deployment.widget.extra: unknown key"),
    (("deployment", "widget", "rollout"), 5, "deployment.widget.rollout: must be an object"),
    (("deployment", "widget", "rollout"), {"max_failures": 2}, "deployment.widget.rollout.wave: missing"),
    (("deployment", "widget", "rollout"), {"wave": 0}, "deployment.widget.rollout.wave: must be an integer >= 1"),
    (("deployment", "widget", "rollout"), {"wave": 2, "max_failures": "2"},
     "deployment.widget.rollout.max_failures: must be an integer >= 1"),
    (("deployment", "widget", "rollout"), {"wave": 2, "timeout": -1},
     "deployment.widget.rollout.timeout: must be a number of seconds > 0"),
    (("deployment", "widget", "rollout"), {"wave": 2, "size": 3}, "deployment.widget.rollout.size: unknown key"),
    (("extra",), 1, "extra: unknown key"),
])
def test_each_wrong_key_type_or_value_is_named_by_its_path(path, value, problem):
    document = template()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = SCHEMA.check(document, name="default")
    assert any(problem in e for e in errors), errors


@pytest.mark.parametrize("missing, problem", [("id", "id: missing"), ("attributes", "attributes: missing"),
                                              ("deployment", "deployment: missing")])
def test_missing_parts(missing, problem):
    document = template()
    del document[missing]
    assert any(e.startswith(problem) for e in SCHEMA.check(document))


def test_every_problem_is_listed_at_once():
    document = template()
    document["description"] = 1
    document["notes"] = [1, 2]
    document["deployment"]["widget"]["element_order"] = "x"
    document["attributes"]["nova"] = {}
    errors = check_document(document, SCHEMA)
    assert len(errors) == 5, errors


def test_not_an_object():
    assert SCHEMA.check([1, 2]) == ["the document: must be an object (id, description, attributes, deployment ...)"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3),
                           max_leaves=8)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["id", "description", "notes", "attributes", "deployment", "deployment.widget",
                                 "deployment.widget.elements", "deployment.widget.element_order",
                                 "deployment.widget.element_states", "deployment.widget.config",
                                 "deployment.widget.crowbar-revision", "attributes.widget"]), min_size=1, max_size=3),
       json_values)
def test_never_raises_and_always_names_a_path(paths, value):
    """Whatever a document holds, the check returns lines (never raises); a change it accepts keeps the shape."""
    document = template()
    for path in paths:
        keys = path.split(".")
        target = document
        for key in keys[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[keys[-1]] = copy.deepcopy(value)
    errors = SCHEMA.check(document, name="default")
    assert all(isinstance(e, str) and ": " in e and "\n" not in e for e in errors)


def test_a_rollout_plan_passes():
    document = template()
    document["deployment"]["widget"]["rollout"] = {"wave": 5, "max_failures": 2, "timeout": 900.5}
    assert SCHEMA.check(document, name="default") == []
