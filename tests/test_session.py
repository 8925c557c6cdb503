"""An operator's session: the CLI in a pseudo-terminal, batch files, the examples."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pexpect
import pytest
import yaml

from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.noderoles import crowbar_data
from barclamp_sdk import dump_scenario, parse_scenario
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.testing import wait_indexed
from barclamp_sdk.model.cluster import record_from_role

ROOT = Path(__file__).resolve().parent.parent
CROWBAR = str(Path(sys.executable).with_name("crowbar"))


@pytest.fixture
def ready(fleet):
    """Three ready machines (one storage server)."""
    return fleet.ready(2, "compute") + fleet.ready(1, "storage")


def spawn(env, *args, timeout=60):
    return pexpect.spawn(CROWBAR, list(args), env=env, cwd=str(ROOT), timeout=timeout,
                         encoding="utf-8", dimensions=(40, 160))


def fake_editor(tmp_path, *rounds):
    """An $EDITOR that applies one rewrite per call, and logs what it was given."""
    script = tmp_path / "editor.py"
    script.write_text(textwrap.dedent(f"""\
        import json, pathlib, sys, yaml
        log = pathlib.Path({str(tmp_path / "editor.log")!r})
        calls = log.read_text().count("\\n") if log.exists() else 0
        rounds = json.loads({json.dumps(json.dumps(list(rounds)))})
        path = pathlib.Path(sys.argv[1])
        text = path.read_text()
        with log.open("a") as handle:
            handle.write(json.dumps(text) + "\\n")
        body = yaml.safe_load("\\n".join(l for l in text.splitlines() if not l.startswith("#")))
        body["attributes"]["widget"].update(rounds[calls])
        comments = "".join(l + "\\n" for l in text.splitlines() if l.startswith("#"))
        path.write_text(comments + yaml.safe_dump(body, sort_keys=False))
        """))
    return f"{sys.executable} {script}"


def editor_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "editor.log").read_text().splitlines()]


def test_editor_reopens_on_invalid_input_and_loses_nothing(crowbar, ready, crowbar_env, tmp_path):
    crowbar.proposals.create("widget", "default")
    env = {**crowbar_env, "EDITOR": fake_editor(tmp_path, {"port": 70000, "tags": ["kept"]}, {"port": 9100})}
    child = spawn(env, "widget", "proposal", "edit", "default")
    child.expect("error: .*port.*less than or equal to 65535")
    child.expect(r"Reopen the editor to fix it\? \[Y/n\]")
    assert crowbar.proposals.get("widget", "default").revision == 1  # nothing written yet
    child.sendline("y")
    child.expect("saved widget/default revision 2")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    calls = editor_calls(tmp_path)
    assert len(calls) == 2
    # The second round opened the user's own (invalid) edit, with the problem on top.
    assert calls[1].startswith("# ERROR: ") and "port: 70000" in calls[1] and "- kept" in calls[1]
    saved = crowbar.proposals.get("widget", "default")
    assert saved.revision == 2 and saved.attributes["port"] == 9100 and saved.attributes["tags"] == ["kept"]


def test_editor_declined_keeps_the_edit_in_a_file(crowbar, ready, crowbar_env, tmp_path):
    crowbar.proposals.create("widget", "default")
    env = {**crowbar_env, "EDITOR": fake_editor(tmp_path, {"mode": "turbo"})}
    child = spawn(env, "widget", "proposal", "edit", "default")
    child.expect(r"Reopen the editor to fix it\? \[Y/n\]")
    child.sendline("n")
    child.expect(r"error: .*mode.*\(your edit is kept in (\S+\.yaml)\)")
    kept = Path(child.match.group(1))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1  # an error, in one line
    assert "mode: turbo" in kept.read_text()
    kept.unlink()
    assert crowbar.proposals.get("widget", "default").revision == 1


def test_editor_without_a_terminal_fails_in_one_line(crowbar, ready, crowbar_env, tmp_path):
    crowbar.proposals.create("widget", "default")
    env = {**crowbar_env, "EDITOR": fake_editor(tmp_path, {"port": 0})}
    done = subprocess.run([CROWBAR, "widget", "proposal", "edit", "default"], env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "greater than or equal to 1" in last and "kept in" in last
    Path(last.rsplit("kept in ", 1)[1].rstrip(")")).unlink()
    assert "Traceback" not in done.stderr


def test_progress_bar_on_a_terminal_and_quiet_otherwise(crowbar, ready, crowbar_env):
    crowbar.proposals.create("widget", "default")
    child = spawn(crowbar_env, "widget", "proposal", "commit", "default")
    child.expect(r"committing")              # the bar's description ...
    child.expect(r"\d+/3")                   # ... and its M/N count, drawn on the terminal
    child.expect("applied widget/default r1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    crowbar.proposals.set("widget", "default", {"port": "9200"})
    piped = subprocess.run([CROWBAR, "widget", "proposal", "commit", "default"], env=crowbar_env, cwd=ROOT,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "applied widget/default r2" in piped.stdout
    assert piped.stderr == ""                # no bar, no escape codes in a pipe


def test_tables_by_default_json_and_yaml_for_scripts(crowbar, ready, crowbar_env):
    crowbar.proposals.create("widget", "default")

    def run(*args):
        done = subprocess.run([CROWBAR, *args], env=crowbar_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = run("machines", "list")
    assert table.splitlines()[0].split()[:2] == ["NAME", "STATE"] and all(n in table for n in ready)
    assert {m["name"] for m in json.loads(run("machines", "list", "--json"))} == set(ready)
    shown = yaml.safe_load(run("widget", "proposal", "show", "default", "--yaml"))
    assert shown["id"] == "bc-widget-default" and shown["deployment"]["widget"]["crowbar-revision"] == 1


# -- batch --------------------------------------------------------------------------


def test_batch_export_apply_round_trip_and_second_apply_changes_nothing(crowbar, ready):
    gizmo = crowbar.proposals.create("gizmo", "default")
    widget = crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9300"})
    for name in ("gizmo", "widget"):
        assert crowbar.proposals.commit(name, "default").status == "applied"
    exported = crowbar.batch.export()
    assert [p["barclamp"] for p in exported["proposals"]] == ["gizmo", "widget"]
    assert exported["proposals"][1]["attributes"]["port"] == 9300
    # The password is a reference into the secrets bag, never the secret.
    assert "generated-default" not in dump_scenario(exported)

    # On another (empty) server, the file recreates the deployment ...
    text = dump_scenario(exported)
    for name in ("widget", "gizmo"):
        crowbar.proposals.deactivate(name, "default")
        crowbar.proposals.delete(name, "default")
    scenario = parse_scenario(text)
    first = crowbar.batch.apply(scenario)
    assert first.saved == {"gizmo/default": "created", "widget/default": "created"}
    assert {r.status for r in first.commits.values()} == {"applied"}
    recreated = crowbar.proposals.get("widget", "default")
    assert recreated.attributes["port"] == 9300 and recreated.elements == widget.elements
    assert crowbar.proposals.get("gizmo", "default").elements == gizmo.elements

    # ... and applying it again writes nothing at all.
    before = crowbar.chef.stats.writes
    second = crowbar.batch.apply(parse_scenario(text))
    assert second.saved == {"gizmo/default": "unchanged", "widget/default": "unchanged"}
    assert {r.status for r in second.commits.values()} == {"unchanged"}
    assert crowbar.chef.stats.writes == before
    assert crowbar.proposals.get("widget", "default").revision == recreated.revision


def test_batch_commits_in_dependency_order_whatever_the_file_order(crowbar, ready):
    text = yaml.safe_dump({"proposals": [
        {"barclamp": "widget", "attributes": {"depends_on": "default"},
         "deployment": {"elements": {"widget-server": [ready[0]], "widget-agent": ready}}},
        {"barclamp": "gizmo", "deployment": {"elements": {"gizmo-node": ready}}},
    ]})
    report = crowbar.batch.apply(parse_scenario(text))
    assert list(report.commits) == ["gizmo/default", "widget/default"]
    assert {r.status for r in report.commits.values()} == {"applied"}


@pytest.mark.parametrize("text, message", [
    ("proposals: [", "is not valid YAML"),
    ("- a list", "must be a mapping"),
    ("proposals: [{barclamp: widget, colour: red}]", "colour"),
    ("proposals: [{barclamp: nosuch}]", "nosuch"),
    ("proposals: [{barclamp: widget, name: 'Bad Name'}]", "Bad Name"),
    ("proposals: [{barclamp: widget, attributes: {port: high}}]", "port"),
    ("proposals: [{barclamp: widget, deployment: {elements: {widget-nope: []}}}]", "widget-nope"),
    ("proposals: [{barclamp: widget}, {barclamp: widget}]", "appears twice"),
])
def test_bad_scenarios_are_refused_before_anything_is_written(crowbar, ready, text, message):
    before = crowbar.chef.stats.writes
    with pytest.raises(ValidationError, match=message):
        crowbar.batch.apply(parse_scenario(text, source="scenario.yaml"))
    assert crowbar.chef.stats.writes == before
    assert crowbar.proposals.list() == []


def test_batch_cli_round_trip(crowbar, ready, crowbar_env, tmp_path):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    exported = subprocess.run([CROWBAR, "batch", "export"], env=crowbar_env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert exported.returncode == 0 and exported.stdout.startswith("# barclamp-sdk scenario")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(exported.stdout.replace("port: 8080", "port: 8443"))
    applied = subprocess.run([CROWBAR, "batch", "apply", str(scenario), "--json"], env=crowbar_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert report["widget/default"]["saved"] == "updated" and report["widget/default"]["commit"]["status"] == "applied"
    assert crowbar.proposals.applied("widget", "default").attributes["port"] == 8443
    broken = tmp_path / "broken.yaml"
    broken.write_text("proposals: [{barclamp: widget, attributes: {port: high}}]\n")
    refused = subprocess.run([CROWBAR, "batch", "apply", str(broken)], env=crowbar_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "port" in refused.stderr


def test_shell_completion_script_and_completions(crowbar_env):
    script = subprocess.run([CROWBAR, "completion", "bash"], env=crowbar_env, capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 0 and "_CROWBAR_COMPLETE=bash_complete" in script.stdout
    words = subprocess.run([CROWBAR], env={**crowbar_env, "_CROWBAR_COMPLETE": "bash_complete",
                                           "COMP_WORDS": "crowbar wid", "COMP_CWORD": "1"},
                           capture_output=True, text=True, timeout=60)
    assert "plain,widget" in words.stdout.splitlines()


# -- examples -------------------------------------------------------------------------


def run_example(env, script, *args):
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_example_allocate_by_hardware(crowbar, fleet, crowbar_env, chef):
    servers = fleet.add(2, "compute")
    others = fleet.add(2, "vm")
    fleet.boot(servers + others)

    # The example reads the inventory, a search snapshot: let search show the machines as booted.
    wait_indexed(chef, "role", [node_role_name(n) for n in servers + others],
                 where=lambda role: getattr(record_from_role(role), "state", None) == "discovered")
    done = run_example(crowbar_env, "allocate_by_hardware.py", "PowerEdge R640")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "allocated 2 machine(s) of type 'PowerEdge R640'"
    # Read each machine's own role: the inventory is a search snapshot, which may lag the allocation.
    allocated = {n for n in servers + others if crowbar_data(chef.roles.get(node_role_name(n))).get("allocated")}
    assert allocated == set(servers)
    assert run_example(crowbar_env, "allocate_by_hardware.py").returncode == 2


def test_example_show_queue(crowbar, ready, crowbar_env, fleet):
    assert run_example(crowbar_env, "show_queue.py").stdout == "nothing is queued\n"
    late = fleet.add(1, "compute")
    fleet.boot(late)
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "queued"
    done = run_example(crowbar_env, "show_queue.py")
    assert done.returncode == 0
    assert done.stdout.startswith("widget/default (revision 1") and late[0] in done.stdout


def test_example_commit_scenario(crowbar, ready, crowbar_env, tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({"proposals": [
        {"barclamp": "gizmo", "deployment": {"elements": {"gizmo-node": ready}}}]}))
    first = run_example(crowbar_env, "commit_scenario.py", str(scenario))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "gizmo/default: created, commit applied\n"
    again = run_example(crowbar_env, "commit_scenario.py", str(scenario))
    assert again.stdout == "gizmo/default: unchanged, commit unchanged\n"
    missing = run_example(crowbar_env, "commit_scenario.py", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def test_example_barclamp_and_its_tests_pass(tmp_path):
    copy = tmp_path / "ntp"
    shutil.copytree(ROOT / "examples" / "ntp", copy)
    lines = len((copy / "ntp_barclamp.py").read_text().splitlines()) + \
        len((copy / "test_ntp.py").read_text().splitlines())
    assert lines < 100  # the author guide's promise: barclamp and tests in under 100 lines
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(copy)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 passed" in done.stdout
