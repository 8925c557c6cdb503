"""Property-based tests (hypothesis) of bad input against the real server.

For proposal edits, node names, Ohai data of odd shapes and malformed scenario
files: the outcome is either a valid result or a typed error that names the
field, and a refused input writes nothing. The CLI turns each refusal into one
line on stderr.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from barclamp_sdk import parse_scenario
from barclamp_sdk.errors import CrowbarError, NotFoundError, ValidationError
from barclamp_sdk.model.inventory import BlockDevice
from barclamp_sdk.model.naming import check_node_name, node_role_name
from barclamp_sdk.testing.fleet import PROFILES, ohai_data
from barclamp_sdk.model.validation import setting_keys
from tests.support import figures
from tests.support.widgets import WidgetAttributes

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: Text a PostgreSQL-backed Chef server can store (it refuses NUL; the client says so before sending).
STORABLE = st.characters(blacklist_characters="\x00")
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(STORABLE, max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(STORABLE, max_size=8), inner, max_size=3),
    max_leaves=8,
)


def assert_one_line_error(code, err):
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


# -- proposal edits ----------------------------------------------------------------------

KEYS = setting_keys(WidgetAttributes)
EDIT_KEYS = st.sampled_from(KEYS) | st.sampled_from(["prot", "nested.depht", "tags.0", "nested", "port.x",
                                                     "elements.widget-agent", "elements.nope"])
EDIT_VALUES = st.sampled_from(["3", "-1", "70000", "true", "null", "~", "[a, b]", "{x: 1}", "fast", "safe",
                               "turbo", "", "[", "0x10", "1e3"]) | st.text(max_size=16)


@pytest.fixture
def widget(crowbar, fleet):
    names = fleet.add(2, "compute")
    fleet.boot(names)
    crowbar.proposals.create("widget", "default")
    return crowbar


@SETTINGS
@given(key=EDIT_KEYS, value=EDIT_VALUES)
def test_any_edit_is_saved_valid_or_refused_naming_the_key(widget, key, value, crowbar_cli):
    crowbar = widget
    before = crowbar.proposals.get("widget", "default")
    writes = crowbar.chef.stats.writes
    try:
        saved = crowbar.proposals.set("widget", "default", {key: value})
    except ValidationError as exc:
        assert crowbar.chef.stats.writes == writes
        assert crowbar.proposals.get("widget", "default").revision == before.revision
        named = key.split(".")[-1] if not key.startswith("elements.") else key.split(".", 1)[1]
        assert named in str(exc) or "machine" in str(exc), (key, value, str(exc))
        code, _, err = crowbar_cli("widget", "proposal", "edit", "default", "--set", f"{key}={value}")
        assert_one_line_error(code, err)
        figures.record("property_edits_refused")
    else:
        stored = crowbar.proposals.get("widget", "default")
        assert stored.to_dict() == saved.to_dict()
        WidgetAttributes.model_validate(stored.attributes)  # what is stored is valid
        figures.record("property_edits_saved")


# -- node names ----------------------------------------------------------------------------

NODE_NAMES = (st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}", fullmatch=True)
              | st.text(min_size=0, max_size=40)
              | st.text(alphabet="abc.-_:/ é☃\x00", min_size=1, max_size=20)
              | st.integers(240, 300).map(lambda n: "n" * n))


@SETTINGS
@given(name=NODE_NAMES)
@example(name=".")  # found by this test: URLs resolve "." away, so the node was unaddressable
@example(name="..")
def test_node_names_are_accepted_only_when_chef_can_hold_their_role(chef_server, crowbar, name, crowbar_cli):
    chef_server.reset()
    try:
        check_node_name(name)
    except ValidationError as exc:
        writes = crowbar.chef.stats.writes
        with pytest.raises(ValidationError):
            crowbar.machines.transition(name, "discovering")
        assert crowbar.chef.stats.writes == writes
        assert "machine name" in str(exc)
        if "\x00" not in name:
            code, _, err = crowbar_cli("machines", "transition", "--", name, "discovering")
            assert_one_line_error(code, err)
        figures.record("property_node_names_refused")
        return
    # Accepted: the server takes the node, discovery makes its role.
    crowbar.chef.nodes.create({"name": name, "chef_environment": "_default", "run_list": [],
                               "automatic": ohai_data(PROFILES["compute"], name, 1, domain="example.com",
                                                      address="10.0.0.1")})
    record = crowbar.machines.transition(name, "discovering")
    assert record.state == "discovering"
    assert crowbar.chef.roles.get(node_role_name(name))["name"] == node_role_name(name)
    assert crowbar.chef.nodes.get(name)["run_list"] == [f"role[{node_role_name(name)}]"]
    figures.record("property_node_names_accepted")


# -- Ohai data of odd shapes ---------------------------------------------------------------------

ODD_FIELDS = {
    ("memory", "total"): "memory.total",
    ("cpu", "total"): "cpu.total",
    ("block_device",): "block_device",
    ("network", "interfaces"): "network.interfaces",
    ("dmi", "system"): "dmi.system",
    ("fqdn",): "fqdn",
}


@st.composite
def odd_ohai(draw):
    automatic = ohai_data(PROFILES["storage"], "odd", 1, domain="example.com", address="10.0.0.9")
    broken = draw(st.lists(st.sampled_from(sorted(ODD_FIELDS)), unique=True, max_size=3))
    for path in broken:
        parent = automatic
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        mode = draw(st.sampled_from(["missing", "junk"]))
        if mode == "missing":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(JUNK)
    if draw(st.booleans()):
        automatic["block_device"] = {}  # no disks at all
    return automatic, broken


@SETTINGS
@given(data=odd_ohai())
def test_odd_ohai_never_breaks_the_inventory_and_is_named(chef_server, crowbar, data, crowbar_cli):
    chef_server.reset()
    automatic, broken = data
    name = "odd.example.com"
    crowbar.chef.nodes.create({"name": name, "chef_environment": "_default", "run_list": [],
                               "automatic": automatic})
    crowbar.machines.transition(name, "discovering")
    machine = crowbar.machines.inventory().get(name)
    assert machine is not None
    assert isinstance(machine.memory_bytes, int) and machine.memory_bytes >= 0
    assert isinstance(machine.cpu_count, int)
    assert all(isinstance(d, BlockDevice) and d.size_bytes >= 0 for d in machine.disks)
    for path in broken:
        value = _get(automatic, path)
        if value is not None and not _plausible(path, value):
            assert any(p.startswith(ODD_FIELDS[path]) for p in machine.fact_problems), (path, value, machine)
    code, out, err = crowbar_cli("machines", "show", name, "--json")
    assert code == 0, err
    assert json.loads(out)["facts"]["fact_problems"] == list(machine.fact_problems)
    figures.record("property_ohai_shapes")


def _get(data, path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _plausible(path, value):
    """Junk that happens to be a readable value of the right shape."""
    from barclamp_sdk.model.inventory import _int, parse_size

    if path == ("memory", "total"):
        return parse_size(value) > 0
    if path == ("cpu", "total"):
        return not isinstance(value, bool) and _int(value, -1) >= 0
    if path == ("fqdn",):
        return isinstance(value, str)
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()) \
        if path == ("block_device",) else isinstance(value, dict)


# -- malformed scenario files -------------------------------------------------------------------


@st.composite
def scenarios(draw):
    """(file text, what the error must name): mostly-right files with one thing wrong, or junk."""
    if draw(st.integers(0, 4)) == 0:
        return yaml.safe_dump(draw(JUNK)), None
    entry = {"barclamp": "widget", "name": "default", "attributes": {"port": 8080},
             "deployment": {"elements": {"widget-agent": []}}}
    wrong = draw(st.sampled_from(["barclamp", "name", "port", "mode", "elements", "element", "extra", "commit"]))
    named = wrong
    if wrong == "barclamp":
        entry["barclamp"] = draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(
            lambda t: t not in ("widget", "gizmo", "sprocket", "cog", "nova", "ceph", "swift", "eqlx", "bios")))
        named = entry["barclamp"]
    elif wrong == "name":
        entry["name"] = draw(st.text(min_size=1, max_size=10).filter(lambda t: not re.fullmatch(r"\w+", t)))
    elif wrong == "port":
        entry["attributes"]["port"] = draw(st.sampled_from([0, 70000, "high", None, [1], {"a": 1}]))
    elif wrong == "mode":
        entry["attributes"]["mode"] = draw(st.sampled_from(["turbo", 3, None, ""]))
    elif wrong == "elements":
        entry["deployment"]["elements"] = draw(st.sampled_from(["x", 3, [1], {"widget-agent": "x"},
                                                                {"widget-agent": [1]}]))
    elif wrong == "element":
        named = draw(st.sampled_from(["widget-nope", "gizmo-node"]))
        entry["deployment"]["elements"] = {named: []}
    elif wrong == "extra":
        named = draw(st.sampled_from(["colour", "proposal", "attribute"]))
        entry[named] = draw(JUNK)
    elif wrong == "commit":
        entry["commit"] = draw(st.sampled_from(["maybe", [True], {"x": 1}]))
    return yaml.safe_dump({"proposals": [entry]}), named


@SETTINGS
@given(case=scenarios())
def test_malformed_scenarios_are_refused_naming_the_field(crowbar, case, crowbar_cli, tmp_path):
    text, named = case
    writes = crowbar.chef.stats.writes
    try:
        report = crowbar.batch.apply(parse_scenario(text, source="scenario.yaml"))
    except (ValidationError, NotFoundError) as exc:
        assert crowbar.chef.stats.writes == writes
        assert crowbar.proposals.list() == []
        message = str(exc)
        if named:
            assert named in message, (named, message)
        path = tmp_path / "scenario.yaml"
        path.write_text(text)
        code, _, err = crowbar_cli("batch", "apply", str(path))
        assert_one_line_error(code, err)
        figures.record("property_scenarios_refused")
    except CrowbarError as exc:  # any other error is a typed one too, but unexpected here
        pytest.fail(f"unexpected {type(exc).__name__}: {exc}")
    else:
        assert named is None and not report.saved, text  # only junk that reads as an empty scenario
        figures.record("property_scenarios_valid")
