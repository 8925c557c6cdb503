"""The `crowbar` command, driven in-process through its entry point."""

from __future__ import annotations

import json

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


def ready_fleet(cli, count=3):
    added = cli.json("sim", "nodes", "add", str(count))["added"]
    cli("sim", "boot", "--all")
    cli("machines", "allocate", *added)
    cli("sim", "boot", "--all")
    return added


def test_machines_commands(cli):
    added = cli.json("sim", "nodes", "add", "2")["added"]
    assert cli.json("sim", "boot", *added) == {n: "discovered" for n in added}
    listed = cli.json("machines", "list")
    assert [m["name"] for m in listed] == added and {m["state"] for m in listed} == {"discovered"}
    assert cli.json("machines", "allocate", added[0]) == {"allocated": [added[0]]}
    _, err = cli("machines", "allocate", expect=2)
    assert "or give --all" in err
    shown = cli.json("machines", "show", added[0])
    assert shown["allocated"] is True and shown["facts"]["cpu_count"] == 32
    record = cli.json("machines", "transition", added[0], "hardware-installing")
    assert record["state"] == "hardware-installing"
    _, err = cli("machines", "transition", added[1], "hardware-installing", expect=1)
    assert err.count("\n") == 1 and err.startswith("error: machine") and "allocate it" in err
    out, _ = cli("machines", "list")
    assert "hardware-installing" in out and added[1] in out
    assert cli.json("machines", "allocate", "--all") == {"allocated": [added[1]]}
    assert cli.json("machines", "allocate", "--all") == {"allocated": []}


def test_machines_check_restores_a_lost_run_list_entry(cli, chef):
    added = cli.json("sim", "nodes", "add", "2")["added"]
    cli("sim", "boot", *added)
    out, _ = cli("machines", "check")
    assert "every node's run list holds its crowbar role" in out
    node = chef.nodes.get(added[1])
    node["run_list"] = ["recipe[other::tool]"]  # a tool replaced the run list
    chef.nodes.update(added[1], node)
    assert cli.json("machines", "check", added[0]) == {"repaired": []}
    assert cli.json("machines", "check") == {"repaired": [added[1]]}
    assert chef.nodes.get(added[1])["run_list"] == [f"role[{node_role_name(added[1])}]", "recipe[other::tool]"]
    assert cli.json("machines", "check") == {"repaired": []}


def test_proposal_lifecycle_and_exit_codes(cli):
    names = cli.json("sim", "nodes", "add", "2")["added"]
    cli("sim", "boot", "--all")
    created = cli.json("widget", "proposal", "create", "default")
    # References, not secrets, in machine-readable output.
    password = created["attributes"]["widget"]["password"]
    assert password["data_bag"] == "crowbar_secrets" and password["key"] == "password"
    assert password["item"].startswith("widget-default--")  # a version of widget/default's secrets
    assert cli.json("widget", "proposal", "commit", "default", expect=3)["status"] == "queued"
    queue = cli.json("queue")
    assert queue[0]["inst"] == "default" and "not ready" in queue[0]["reasons"][0]
    out, _ = cli("widget", "proposal", "commit", "default", expect=3)
    assert "is queued because:" in out
    cli("sim", "boot", *names)  # allocated by the queue; ready releases it
    assert cli.json("widget", "proposal", "status", "default")["status"] == "ready"
    saved = cli.json("widget", "proposal", "edit", "default", "--set", "port=9001", "--set", "tags=[x]")
    assert saved["attributes"]["widget"]["port"] == 9001 and saved["attributes"]["widget"]["tags"] == ["x"]
    diff = cli.json("widget", "proposal", "diff", "default")
    assert {c["path"] for c in diff["changes"]} == {"attributes.widget.port", "attributes.widget.tags"}
    planned = cli.json("widget", "proposal", "commit", "default", "--dry-run")
    assert planned["status"] == "planned" and planned["changes"][0]["role"] == "widget-config-default"
    assert cli.json("widget", "proposal", "commit", "default")["status"] == "applied"
    assert cli.json("widget", "proposal", "commit", "default")["status"] == "unchanged"
    history = cli.json("widget", "proposal", "history", "default")
    assert [h["revision"] for h in history] == [1, 2]
    shown = cli.json("widget", "proposal", "show", "default", "--revision", "1")
    assert shown["attributes"]["widget"]["port"] == 8080
    out, _ = cli("widget", "proposal", "show", "default")
    assert "port = 9001" in out and "********" in out and "generated-default" not in out


def test_edit_with_a_file_keeps_secrets(cli, tmp_path, chef):
    ready_fleet(cli, 2)
    cli("widget", "proposal", "create", "default")
    document = cli.json("widget", "proposal", "show", "default")
    document["attributes"]["widget"]["mode"] = "fast"
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document))
    saved = cli.json("widget", "proposal", "edit", "default", "--file", str(path))
    assert saved["attributes"]["widget"]["mode"] == "fast"
    assert saved["attributes"]["widget"]["password"] == document["attributes"]["widget"]["password"]
    # A masked value pasted back (say, from the table view) keeps the secret.
    document = cli.json("widget", "proposal", "show", "default")
    document["attributes"]["widget"]["password"] = "******** (crowbar_secrets/widget-default:password)"
    document["attributes"]["widget"]["port"] = 1234
    path.write_text(json.dumps(document))
    cli("widget", "proposal", "edit", "default", "--file", str(path))
    api = Crowbar(chef, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET)
    proposal = api.proposals.get("widget", "default")
    assert proposal.attributes["port"] == 1234
    assert api.secrets.get(proposal.attributes["password"]) == "generated-default"
    # Setting it on the command line stores a new secret; the output never shows it.
    out, _ = cli("widget", "proposal", "edit", "default", "--set", "password=n3w-s3cret")
    assert "n3w-s3cret" not in out
    assert api.secrets.get(api.proposals.get("widget", "default").attributes["password"]) == "n3w-s3cret"


@pytest.mark.parametrize("args,message,code", [
    (("widget", "proposal", "create", "bad-name"), "error: proposal name 'bad-name' is invalid", 1),
    (("widget", "proposal", "show", "missing"), "error: no proposal widget/missing; create it with", 1),
    (("widget", "proposal", "edit", "default", "--set", "prot=1"), "did you mean port?", 1),
    (("widget", "proposal", "edit", "default", "--set", "noequals"), "is not KEY=VALUE", 2),
    (("nope", "proposal", "list"), "no command or barclamp 'nope'", 2),
    (("machines", "transition", "x.example.com", "flying"), "Invalid value for 'STATE'", 2),
    (("machines", "allocate", "ghost.example.com"), "error: no machine 'ghost.example.com'", 1),
])
def test_errors_are_one_clear_line(cli, args, message, code):
    ready_fleet(cli, 1)
    cli("widget", "proposal", "create", "default")
    _, err = cli(*args, expect=code)
    assert message in err and "Traceback" not in err


def test_barclamps_list_and_install(cli):
    names = [b["name"] for b in cli.json("barclamps", "list")]
    # In run order: bios (17) before the test barclamps (40, 50) before nova (95).
    assert names.index("bios") < names.index("gizmo") < names.index("widget") < names.index("nova")
    assert set(cli.json("barclamps", "install", "widget")["uploaded"]) == {"widget-server", "widget-agent", "widget-store"}
    assert cli.json("barclamps", "install", "widget")["uploaded"] == []


def test_roles_show_expands_the_run_list(cli):
    names = ready_fleet(cli, 1)
    cli("widget", "proposal", "create", "default")
    cli("widget", "proposal", "commit", "default")
    shown = cli.json("roles", "show", names[0])
    assert shown["expanded"]["recipes"] == ["widget::server", "widget::agent"]
    assert shown["role"]["name"].startswith("crowbar-d52")
    # People see run-list entries whole (square brackets are not taken as markup).
    out, _ = cli("roles", "show", names[0])
    assert "run list: role[widget-config-default], role[widget-server]" in out
    out, _ = cli("widget", "proposal", "show", "default")
    assert "revision 1  [ready]" in out
    cli("widget", "proposal", "edit", "default", "--set", "port=9001")
    out, _ = cli("widget", "proposal", "commit", "default", "--dry-run")
    assert "update widget-config-default\n      ~ default_attributes.widget.port: 8080 -> 9001" in out


def test_sim_converge_runs_chef_client(cli, chef):
    names = ready_fleet(cli, 1)
    assert cli.json("sim", "converge")["converged"] == names
    assert chef.nodes.get(names[0])["automatic"]["roles"][0].startswith("crowbar-")
