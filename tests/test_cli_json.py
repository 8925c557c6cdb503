"""The CLI for operators and scripts: machine filters and hardware, --json everywhere,
JSON errors, `raw PATH`, completion of names read from the server, CROWBAR_BARCLAMPS
next to the module. Driven through the command against the real test server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.shell_completion import ShellComplete

from barclamp_sdk.api import Crowbar
from barclamp_sdk.cli.app import root
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS

ROOT = Path(__file__).resolve().parent.parent
CROWBAR = str(Path(sys.executable).parent / "crowbar")
GIB = 1024**3


def names_of(rows):
    return [row["name"] for row in rows]


def test_machines_list_filters_and_shows_hardware(cli, chef):
    compute = cli.json("sim", "nodes", "add", "2")["added"]
    storage = cli.json("sim", "nodes", "add", "1", "--hardware", "storage")["added"]
    vm = cli.json("sim", "nodes", "add", "1", "--hardware", "vm")["added"]
    cli("sim", "boot", "--all")
    cli("machines", "allocate", *storage, compute[0])
    cli("sim", "boot", "--all")

    listed = {row["name"]: row for row in cli.json("machines", "list")}
    assert list(listed) == sorted(compute + storage + vm)
    hardware = listed[compute[0]]["hardware"]
    assert hardware["profile"] == "compute" and hardware["product"] == "PowerEdge R640"
    assert hardware["manufacturer"] == "Dell Inc." and hardware["cpus"] == 32
    assert hardware["memory_bytes"] == 384 * GIB
    assert (hardware["disks"], hardware["data_disks"]) == (6, 5)
    assert hardware["disk_names"] == ["sda", "sdb", "sdc", "sdd", "sde", "sdf"]
    assert listed[storage[0]]["hardware"]["memory_bytes"] == 128 * GIB
    assert (listed[storage[0]]["hardware"]["disks"], listed[storage[0]]["hardware"]["data_disks"]) == (12, 11)
    assert listed[vm[0]]["hardware"]["product"].startswith("Standard PC")
    assert cli.json("machines", "show", compute[0])["hardware"] == hardware

    assert names_of(cli.json("machines", "list", "--hardware", "storage")) == storage
    assert names_of(cli.json("machines", "list", "--hardware", "r740XD2")) == storage  # product, case ignored
    assert names_of(cli.json("machines", "list", "--hardware", "QEMU")) == vm  # manufacturer
    assert names_of(cli.json("machines", "list", "--hardware", "PowerEdge")) == sorted(compute + storage)
    assert names_of(cli.json("machines", "list", "--min-disks", "6")) == storage
    assert names_of(cli.json("machines", "list", "--min-disks", "5")) == sorted(compute + storage)
    assert names_of(cli.json("machines", "list", "--allocated")) == sorted([compute[0], *storage])
    assert names_of(cli.json("machines", "list", "--unallocated")) == sorted([compute[1], *vm])
    assert names_of(cli.json("machines", "list", "--state", "ready")) == sorted([compute[0], *storage])
    assert names_of(cli.json("machines", "list", "--state", "discovered", "--hardware", "compute")) == [compute[1]]
    assert cli.json("machines", "list", "--hardware", "nothing-like-it") == []

    cli("widget", "proposal", "create", "default", "--empty")
    cli("widget", "proposal", "edit", "default", "--set", f"elements.widget-server={storage[0]}",
        "--set", f"elements.widget-agent={compute[0]},{storage[0]}")
    cli("widget", "proposal", "commit", "default")
    assert names_of(cli.json("machines", "list", "--element", "widget-server")) == storage
    assert names_of(cli.json("machines", "list", "--element", "widget-agent")) == sorted([compute[0], *storage])
    assert all("widget-server" in row["elements"] for row in cli.json("machines", "list", "--element", "widget-server"))
    assert cli.json("machines", "list", "--element", "widget-server", "--unallocated") == []

    # The same filters from the API.
    api = Crowbar(chef, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET)
    assert [r.name for r in api.machines.list(hardware="storage", state="ready")] == storage
    assert [r["name"] for r in api.machines.listing(min_disks=6)] == storage

    out, _ = cli("machines", "list")
    header = out.splitlines()[0].split()
    assert header == ["NAME", "STATE", "ALLOCATED", "PRODUCT", "MEMORY", "DISKS", "ELEMENTS", "PENDING"]
    line = next(line for line in out.splitlines() if line.strip().startswith(storage[0]))
    assert "PowerEdge R740xd2 (storage)" in line and "128 GiB" in line and "12 (11 data)" in line
    out, _ = cli("machines", "list", "--hardware", "nothing-like-it")
    assert out.strip() == "no machine matches"

    error = cli.error("machines", "list", "--state", "flying", expect=2)
    assert error["type"] == "BadParameter" and "'flying' is not one of" in error["error"]
    error = cli.error("machines", "list", "--min-disks", "-1", expect=2)
    assert "--min-disks" in error["error"]


def test_errors_are_a_json_object_on_stderr_in_json_mode(cli, tmp_path):
    cli.json("sim", "nodes", "add", "1")
    error = cli.error("machines", "show", "ghost.example.com", expect=1)
    assert error == {"error": "no machine 'ghost.example.com'; see `crowbar machines list`",
                     "type": "NotFoundError", "exit_code": 1}
    # --json given before the command, and a usage error (parsed before any command runs).
    _, err = cli("--json", "machines", "allocate", expect=2)
    assert json.loads(err) == {"error": "name the machines to allocate, or give --all (not both)",
                               "type": "UsageError", "exit_code": 2}
    error = cli.error("nope", "proposal", "list", expect=2)
    assert error["type"] == "UsageError" and "no command or barclamp 'nope'" in error["error"]
    cli("widget", "proposal", "create", "default", "--empty")
    error = cli.error("widget", "proposal", "edit", "default", "--set", "prot=1", expect=1)
    assert error["type"] == "ValidationError" and "did you mean port?" in error["error"]
    document = cli.json("widget", "proposal", "show", "default")
    document["attributes"]["widget"].update(port="high", mode="slow")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    error = cli.error("widget", "proposal", "edit", "default", "--file", str(path), expect=1)
    assert error["type"] == "ValidationError" and len(error["errors"]) == 2, error
    assert any("port" in e for e in error["errors"]) and any("mode" in e for e in error["errors"])
    # Plain mode keeps the one line.
    _, err = cli("machines", "show", "ghost.example.com", expect=1)
    assert err == "error: no machine 'ghost.example.com'; see `crowbar machines list`\n"


def test_every_command_takes_json():
    missing = []

    def walk(command: click.Command, path: list[str], ctx: click.Context) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, [*path, name], click.Context(sub, parent=ctx, info_name=name))
        elif "json" not in {p.name for p in command.params}:
            missing.append(" ".join(path))

    walk(root, [], click.Context(root))
    assert missing == []


def test_batch_export_local_and_proposal_commands_print_json(cli, tmp_path):
    cli("widget", "proposal", "create", "default", "--empty", "--set", "port=9001")
    exported = cli.json("batch", "export", "widget")
    assert exported["proposals"][0]["barclamp"] == "widget"
    assert exported["proposals"][0]["attributes"]["port"] == 9001
    out, _ = cli("--json", "batch", "export", "widget")
    assert json.loads(out) == exported
    yaml_text, _ = cli("batch", "export", "widget")
    assert yaml_text.startswith("# barclamp-sdk scenario")
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(exported))
    plan = cli.json("batch", "apply", "--dry-run", str(scenario))["plan"]
    assert plan[0]["proposal"] == "widget/default"
    cli("gizmo", "proposal", "create", "spare", "--empty")
    assert cli.json("gizmo", "proposal", "delete", "spare") == {"deleted": "gizmo/spare", "forced": False}
    assert cli.json("local", "stop", "--dir", str(tmp_path / "none")) == {"stopped": False,
                                                                         "dir": str(tmp_path / "none")}
    error = cli.error("local", "env", "--dir", str(tmp_path / "none"), expect=1)
    assert error["type"] == "NotFoundError" and "no local Chef server running" in error["error"]
    completion = cli.json("completion", "bash")
    assert completion["shell"] == "bash" and "_CROWBAR_COMPLETE" in completion["script"]


def test_raw_defaults_to_get(cli, chef):
    names = cli.json("sim", "nodes", "add", "2")["added"]
    assert sorted(cli.json("raw", "/nodes")) == sorted(names)
    assert cli.json("raw", f"/nodes/{names[0]}")["name"] == names[0]
    assert cli.json("raw", "get", f"/nodes/{names[0]}")["name"] == names[0]
    out, _ = cli("raw", "/nodes")  # printed as JSON even without --json
    assert sorted(json.loads(out)) == sorted(names)
    error = cli.error("raw", "FETCH", "/nodes", expect=2)
    assert "METHOD must be one of GET, PUT, POST, DELETE" in error["error"]
    error = cli.error("raw", "GET", "/nodes", "extra", expect=2)
    assert "give [METHOD] PATH" in error["error"]
    error = cli.error("raw", "nodes", expect=1)
    assert "PATH must start with /" in error["error"]


def completions(args: list[str], incomplete: str) -> list[str]:
    completer = ShellComplete(root, {}, "crowbar", "_CROWBAR_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


def test_completion_of_machine_proposal_and_setting_names(cli, crowbar_env):
    names = cli.json("sim", "nodes", "add", "2")["added"]
    cli("sim", "boot", "--all")
    cli("widget", "proposal", "create", "default", "--empty")
    cli("widget", "proposal", "create", "second", "--empty")
    assert completions(["machines", "show"], "") == sorted(names)
    assert completions(["machines", "show"], names[1][:-len(".example.com")]) == [names[1]]  # the name less .example.com
    assert completions(["machines", "allocate", names[0]], "") == sorted(names)
    assert completions(["roles", "show"], "d52") == sorted(names)
    assert completions(["widget", "proposal", "show"], "") == ["default", "second"]
    assert completions(["widget", "proposal", "commit"], "s") == ["second"]
    assert completions(["widget", "proposal", "create"], "") == []  # a new name
    keys = completions(["widget", "proposal", "edit", "default", "--set"], "")
    assert "port=" in keys and "description=" in keys and "elements.widget-server=" in keys
    assert completions(["widget", "proposal", "edit", "default", "--set"], "po") == ["port="]
    assert completions(["widget", "proposal", "edit", "default", "--set"], "port=") == []
    assert completions(["widget", "proposal", "edit", "default", "--unset"], "po") == ["port"]

    # As the shell runs it: a real process answering bash's protocol.
    words = "crowbar widget proposal show "
    done = subprocess.run([CROWBAR], env={**crowbar_env, "_CROWBAR_COMPLETE": "bash_complete",
                                          "COMP_WORDS": words, "COMP_CWORD": "4"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["plain,default", "plain,second"], done
    # No server: nothing completed, no error printed, still exit 0.
    offline = {**crowbar_env, "CHEF_SERVER_URL": "http://127.0.0.1:9", "_CROWBAR_COMPLETE": "bash_complete",
               "COMP_WORDS": "crowbar machines show ", "COMP_CWORD": "3"}
    done = subprocess.run([CROWBAR], env=offline, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "", "")


def test_crowbar_barclamps_loads_a_module_from_the_current_directory(crowbar_env):
    env = {k: v for k, v in crowbar_env.items() if k != "PYTHONPATH"}
    env["CROWBAR_BARCLAMPS"] = "ntp_barclamp:Ntp"
    done = subprocess.run([CROWBAR, "barclamps", "list", "--json"], cwd=ROOT / "examples" / "ntp", env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert "ntp" in [b["name"] for b in json.loads(done.stdout)], done
    assert "could not be loaded" not in done.stderr
    # A module that is nowhere is still reported, once, and the rest load.
    env["CROWBAR_BARCLAMPS"] = "no_such_module:Thing"
    done = subprocess.run([CROWBAR, "barclamps", "list", "--json"], cwd=ROOT / "examples" / "ntp", env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no_such_module:Thing" in done.stderr and "ntp" not in done.stdout, done
