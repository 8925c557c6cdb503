"""Bad input from users and nodes: one clear line, nothing written (issue 15).

Each test names, in its docstring, what the code did before.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from barclamp_sdk.chef import ChefConfig
from barclamp_sdk.errors import ConfigurationError, ValidationError
from barclamp_sdk.inputs import load_json, load_yaml, read_document
from barclamp_sdk.model.naming import (
    check_barclamp_name,
    check_node_name,
    check_proposal_name,
    node_role_name,
)
from barclamp_sdk.testing.snapshot import server_snapshot


def one_line_error(code: int, err: str) -> str:
    assert code != 0, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "internal error" not in err and "Traceback" not in err, err
    return err


def yaml_bomb() -> str:
    """About 8 KB, nine levels of anchors: 10**9 strings once expanded."""
    lines = ['a0: &a0 ["' + "lol" * 800 + '"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    text = "\n".join(lines) + "\n"
    text += "# " + "pad " * ((8 * 1024 - len(text)) // 4) + "\n"
    return text


@pytest.fixture
def widget(crowbar_cli, chef):
    """A saved (empty) widget proposal; returns (cli, revision count helper)."""
    code, _, err = crowbar_cli("widget", "proposal", "create", "default", "--empty")
    assert code == 0, err
    return crowbar_cli


def saved_document(crowbar_cli) -> dict:
    code, out, err = crowbar_cli("widget", "proposal", "show", "default", "--json")
    assert code == 0, err
    return json.loads(out)


# -- input readers ------------------------------------------------------------------------


def test_a_yaml_bomb_is_refused_in_under_a_second_and_100_mb(tmp_path, widget, chef):
    """Before: ``edit --file`` on this 8 KB file ran 41 s, reached 2.9 GB and ended in MemoryError."""
    bomb = yaml_bomb()
    assert 7 * 1024 < len(bomb.encode()) <= 9 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="expands to more than"):
        load_yaml(bomb, "bomb.yaml")
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 100 * 1024 * 1024, (seconds, peak)

    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    before = server_snapshot(chef)
    started = time.perf_counter()
    err = one_line_error(*widget("widget", "proposal", "edit", "default", "--file", str(path))[::2])
    assert time.perf_counter() - started < 5 and "bomb.yaml" in err and "YAML aliases" in err
    assert server_snapshot(chef) == before


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "a:\n" + "".join(" " * i + "- \n" for i in range(3000)),
                                  "{" + '"a": {' * 5000 + "}" * 5001])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path, widget, chef, text):
    """Before: RecursionError, printed as "internal error", in ``edit --file`` and ``batch apply``."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    before = server_snapshot(chef)
    for args in (("widget", "proposal", "edit", "default", "--file", str(path)), ("batch", "apply", str(path))):
        code, _, err = widget(*args)
        assert "nested" in one_line_error(code, err) and "deep.yaml" in err
    assert server_snapshot(chef) == before
    with pytest.raises(ValidationError, match="nested more than"):
        load_json("[" * 100_000 + "]" * 100_000, "deep.json")


def test_a_binary_file_is_refused_naming_the_file(tmp_path, widget, chef):
    """Before: UnicodeDecodeError ("internal error") in ``edit --file`` and ``batch apply``."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    before = server_snapshot(chef)
    for args in (("widget", "proposal", "edit", "default", "--file", str(path)), ("batch", "apply", str(path)),
                 ("raw", "PUT", "/roles/x", "--data", str(path))):
        err = one_line_error(*widget(*args)[::2])
        assert "photo.jpg is not UTF-8 text (byte 0xff at offset 0)" in err, err
    assert server_snapshot(chef) == before


def test_only_json_values_come_out_of_yaml():
    """Before: ``!!binary``, ``.nan``, integer keys and dates passed into documents (and then broke JSON)."""
    for text, problem in (("a: !!binary aGk=", "!!binary"), ("a: .nan", "finite"), ("1: x", "keys must be strings"),
                          ("a: !!set {x}", "!!set"), ("&a [*a]", "recursive")):
        with pytest.raises(ValidationError, match=problem):
            load_yaml(text, "f.yaml")
    assert load_yaml("when: 2024-01-02\nx: &x {a: 1}\ny: {<<: *x, b: 2}", "f") == {
        "when": "2024-01-02", "x": {"a": 1}, "y": {"a": 1, "b": 2}}


def test_oversized_input_is_refused_before_parsing(tmp_path):
    """Before: any size was read whole into memory."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (11 * 1024 * 1024))
    with pytest.raises(ValidationError, match="big.yaml is larger than"):
        read_document(path)


def test_batch_apply_writes_nothing_when_a_later_proposal_fails(tmp_path, crowbar_cli, chef):
    """Before: the first proposal, its history and secrets were written, then the second refused."""
    path = tmp_path / "scenario.yaml"
    path.write_text("proposals:\n- {barclamp: widget, name: one, commit: false}\n"
                    "- {barclamp: widget, name: two, commit: false,\n"
                    "   deployment: {elements: {widget-server: [no-such-machine.example.com]}}}\n")
    before = server_snapshot(chef)
    for args in (("batch", "apply", str(path)), ("batch", "apply", "--dry-run", str(path))):
        err = one_line_error(*crowbar_cli(*args)[::2])
        assert "scenario (nothing written): widget/two: widget-server names unknown machine" in err, err
    assert server_snapshot(chef) == before


def test_batch_apply_dry_run_prints_the_plan(tmp_path, crowbar_cli, chef):
    """Before: there was no dry run; the plan is what apply would do, and nothing is written."""
    path = tmp_path / "scenario.yaml"
    path.write_text("proposals:\n- {barclamp: widget, name: one, commit: false}\n")
    before = server_snapshot(chef)
    code, out, err = crowbar_cli("batch", "apply", "--dry-run", str(path), "--json")
    assert code == 0, err
    assert json.loads(out) == {"plan": [{"proposal": "widget/one", "save": "create", "commit": False, "machines": []}]}
    assert server_snapshot(chef) == before
    assert crowbar_cli("batch", "apply", str(path))[0] == 0
    code, out, _ = crowbar_cli("batch", "apply", "--dry-run", str(path), "--json")
    assert json.loads(out)["plan"][0]["save"] == "unchanged"


# -- the CLI: no "internal error" ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://[::1", "http://h:99999", "http://h:port", "ftp://h", "http://", "http:// h",
                                 "http://h\n", "chef.example.com"])
def test_malformed_server_urls_are_one_line(crowbar_cli, url):
    """Before: ``--server-url 'http://[::1'`` gave "internal error: ValueError: Invalid IPv6 URL"."""
    err = one_line_error(*crowbar_cli("--server-url", url, "machines", "list")[::2])
    assert "Chef server URL" in err and "must look like" in err


@pytest.mark.parametrize("editor, problem", [("/nonexistent/editor", "cannot run the editor '/nonexistent/editor'"),
                                             ("vi '", "cannot parse the editor command"),
                                             ("  ", "is empty")])
def test_broken_editors_are_one_line(widget, chef, monkeypatch, editor, problem):
    """Before: FileNotFoundError / ValueError from shlex, printed as "internal error"."""
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor)
    before = server_snapshot(chef)
    err = one_line_error(*widget("widget", "proposal", "edit", "default")[::2])
    assert problem in err and "nothing saved" in err
    assert server_snapshot(chef) == before


BAD_DOCUMENTS = {
    "no id": (lambda d: d.pop("id"), "id: missing"),
    "no deployment": (lambda d: d.pop("deployment"), "deployment: missing"),
    "deployment a string": (lambda d: d.__setitem__("deployment", "x"), "deployment: must be an object"),
    "attributes a list": (lambda d: d.__setitem__("attributes", []), "attributes: must be an object"),
    "elements a list": (lambda d: d["deployment"]["widget"].__setitem__("elements", []),
                        "deployment.widget.elements: must map"),
    "revision abc": (lambda d: d["deployment"]["widget"].__setitem__("crowbar-revision", "abc"),
                     "crowbar-revision: must be an integer >= 0"),
    "revision null": (lambda d: d["deployment"]["widget"].__setitem__("crowbar-revision", None),
                      "crowbar-revision: must be an integer >= 0"),
    "element_order a string": (lambda d: d["deployment"]["widget"].__setitem__("element_order", "x"),
                               "deployment.widget.element_order: must be a list of lists of element names"),
    "element_states a string": (lambda d: d["deployment"]["widget"].__setitem__("element_states", "x"),
                                "deployment.widget.element_states: must map"),
    "run list order high": (lambda d: d["deployment"]["widget"].__setitem__("element_run_list_order", "high"),
                            "element_run_list_order: must map"),
    "description a dict": (lambda d: d.__setitem__("description", {"a": 1}), "description: must be a string"),
    "notes of dicts": (lambda d: d.__setitem__("notes", [{"a": 1}]), "notes[0]: must be a string"),
    "unknown top-level key": (lambda d: d.__setitem__("extra", 1), "extra: unknown key"),
    "another barclamp's attributes": (lambda d: d["attributes"].__setitem__("gizmo", {}),
                                      "attributes.gizmo: not allowed in a widget proposal"),
    "another barclamp's deployment": (lambda d: d["deployment"].__setitem__("gizmo", {}),
                                      "deployment.gizmo: not allowed"),
    "_default environment": (lambda d: d["deployment"]["widget"]["config"].__setitem__("environment", "_default"),
                             "config.environment: must not be Chef's '_default'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_edit_file_refuses_every_wrong_shape(tmp_path, widget, chef, case):
    """Before: KeyError/AttributeError/ValueError ("internal error"), or the wrong shape saved as a new revision."""
    change, problem = BAD_DOCUMENTS[case]
    document = saved_document(widget)
    change(document)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document))
    before = server_snapshot(chef)
    err = one_line_error(*widget("widget", "proposal", "edit", "default", "--file", str(path))[::2])
    assert problem in err, err
    assert server_snapshot(chef) == before


def test_edit_file_lists_every_problem_with_its_path(tmp_path, widget):
    """Before: the first KeyError ended the command; now every problem is listed, on one line."""
    document = saved_document(widget)
    document["notes"] = [1]
    document["deployment"]["widget"]["element_order"] = "x"
    document["description"] = []
    path = tmp_path / "doc.yaml"
    path.write_text(json.dumps(document))
    err = one_line_error(*widget("widget", "proposal", "edit", "default", "--file", str(path))[::2])
    assert "notes[0]: must be a string" in err and "description: must be a string" in err
    assert "deployment.widget.element_order: must be a list of lists of element names" in err


# -- names --------------------------------------------------------------------------------------


def test_names_are_checked_to_their_very_end(crowbar_cli, chef):
    """Before: the checks used ``$``, so "trail\\n" passed and the server answered a misleading 401."""
    for check, name in ((check_proposal_name, "trail\n"), (check_barclamp_name, "nova\n"),
                        (check_node_name, "node.example.com\n")):
        with pytest.raises(ValidationError):
            check(name)
    before = server_snapshot(chef)
    err = one_line_error(*crowbar_cli("widget", "proposal", "create", "trail\n", "--empty")[::2])
    assert "proposal name 'trail\\n' is invalid" in err
    assert server_snapshot(chef) == before


def add_node(chef, name):
    chef.nodes.create({"name": name, "json_class": "Chef::Node", "chef_type": "node", "run_list": [],
                       "automatic": {}, "normal": {}, "default": {}, "override": {}})


def test_nodes_that_cannot_own_their_role_are_reported_and_others_go_on(crowbar_cli, chef):
    """Before: ``a_b.example.com`` silently shared ``a.b.example.com``'s role; ``col:on`` (legal in
    Chef) aborted ``machines discover`` for every node after it, and ``sim boot --all`` stopped with a 401."""
    code, out, err = crowbar_cli("sim", "nodes", "add", "2", "--json")
    fleet = json.loads(out)["added"]
    odd = ["a.b.example.com", "a_b.example.com", "..._example_com", "___.example_com", "col:on"]
    for name in odd:
        add_node(chef, name)
    code, out, err = crowbar_cli("machines", "discover", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert sorted(result["discovered"]) == sorted(["a.b.example.com", "..._example_com", *fleet])
    skipped = result["skipped"]
    assert set(skipped) == {"a_b.example.com", "___.example_com", "col:on"}
    assert "already belongs to 'a.b.example.com'" in skipped["a_b.example.com"]
    assert "already belongs to '..._example_com'" in skipped["___.example_com"]
    assert "characters a Chef role name cannot hold (':')" in skipped["col:on"]
    assert "warning: node 'col:on' is not discovered" in err and "internal error" not in err
    owner = chef.roles.get(node_role_name("a_b.example.com"))["default_attributes"]["crowbar"]["node"]
    assert owner == "a.b.example.com"  # the first discovered owns the role name

    code, out, err = crowbar_cli("sim", "boot", "--all", "--json")
    assert code == 0, err
    states = json.loads(out)
    assert {n: states[n] for n in ("a_b.example.com", "___.example_com", "col:on")} == dict.fromkeys(
        ("a_b.example.com", "___.example_com", "col:on"), "skipped")
    assert {states[n] for n in fleet} == {"discovered"}
    listed = [m["name"] for m in json.loads(crowbar_cli("machines", "list", "--json")[1])]
    assert sorted(listed) == sorted(["a.b.example.com", "..._example_com", *fleet])
    # Naming one of them is refused with its reason, and writes nothing.
    before = server_snapshot(chef)
    code, _, err = crowbar_cli("machines", "discover", "a_b.example.com")
    assert code == 1 and "already belongs to" in err and "internal error" not in err
    err = one_line_error(*crowbar_cli("machines", "transition", "a_b.example.com", "discovered")[::2])
    assert "already belongs to 'a.b.example.com'" in err
    err = one_line_error(*crowbar_cli("machines", "show", "a_b.example.com")[::2])
    assert "no machine 'a_b.example.com'" in err
    assert server_snapshot(chef) == before


def test_a_crowbar_role_of_unknown_shape_is_reported_never_fatal(crowbar_cli, chef, caplog):
    """Before: a ``crowbar-*`` role with, say, a text priority raised ValueError in every listing."""
    code, out, _ = crowbar_cli("sim", "nodes", "add", "1", "--json")
    (node,) = json.loads(out)["added"]
    assert crowbar_cli("sim", "boot", node)[0] == 0
    chef.roles.create({"name": "crowbar-odd", "json_class": "Chef::Role", "chef_type": "role",
                       "default_attributes": {"crowbar": {"node": "odd", "run_list_map": {"r": {"priority": "high"}},
                                                          "claimed_disks": ["x"]}},
                       "override_attributes": {}, "run_list": [], "env_run_lists": {}})
    code, out, err = crowbar_cli("machines", "list", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == [node]
    assert "role crowbar-odd is not a machine role barclamp-sdk can read" in caplog.text  # a warning: line


# -- markup -------------------------------------------------------------------------------------


def test_markup_in_server_strings_is_printed_as_text(widget):
    """Before: ``proposal list`` crashed (MarkupError) for everyone once a description held ``[/bold]``,
    and ``[red]`` or ``[link=...]`` were rendered."""
    text = "[/bold] [red]alarm[/red] [link=https://evil.example]click[/link]"
    assert widget("widget", "proposal", "create", "marked", "--empty", "--description", text)[0] == 0
    code, out, err = widget("widget", "proposal", "list")
    assert code == 0, err
    assert text in " ".join(out.split()), out
    code, out, err = widget("widget", "proposal", "show", "marked")
    assert code == 0 and text in out, err
    code, out, err = widget("batch", "export")
    assert code == 0


# -- credentials ------------------------------------------------------------------------------


@pytest.fixture
def chef_dir(tmp_path):
    directory = tmp_path / ".chef"
    directory.mkdir()
    return directory


def test_a_world_readable_credentials_file_with_an_inline_key_is_refused(chef_dir):
    """Before: accepted, though a world-readable key file is refused."""
    path = chef_dir / "credentials"
    path.write_text('[default]\nclient_name = "x"\nchef_server_url = "http://h"\n'
                    'client_key = """\n-----BEGIN RSA PRIVATE KEY-----\nabc\n"""\n')
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match=r"credentials file .* can be read by other users \(mode 0644\); "
                                                 r"run: chmod 600"):
        ChefConfig.load(config_dir=chef_dir, environ={})
    path.chmod(0o600)
    assert ChefConfig.load(config_dir=chef_dir, environ={}).client_key_pem


def test_relative_paths_resolve_as_users_expect(chef_dir, tmp_path, monkeypatch):
    """Before: a relative ``--client-key`` (or CHEF_CLIENT_KEY) was resolved against ~/.chef."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    common = {"server_url": "http://h", "client_name": "x"}
    config = ChefConfig.load(client_key="keys/me.pem", config_dir=chef_dir, environ={}, **common)
    assert config.client_key_path == str(work / "keys" / "me.pem")
    config = ChefConfig.load(config_dir=chef_dir, environ={"CHEF_CLIENT_KEY": "me.pem", "CHEF_SERVER_URL": "http://h",
                                                           "CHEF_CLIENT_NAME": "x"})
    assert config.client_key_path == str(work / "me.pem")
    (chef_dir / "credentials").write_text('[default]\nclient_name = "x"\nchef_server_url = "http://h"\n'
                                          'client_key = "me.pem"\nssl_ca_file = "ca.pem"\n')
    config = ChefConfig.load(config_dir=chef_dir, environ={})
    assert config.client_key_path == str(chef_dir / "me.pem") and config.verify == str(chef_dir / "ca.pem")


def test_binary_configuration_files_are_one_clear_error(chef_dir, tmp_path, crowbar_cli, monkeypatch):
    """Before: a non-UTF-8 credentials file, knife.rb or key file raised UnicodeDecodeError ("internal error")."""
    (chef_dir / "credentials").write_bytes(b"\xff\xfe[default]\n")
    with pytest.raises(ConfigurationError, match=r"credentials file .* is not UTF-8 text \(byte 0xff at offset 0\)"):
        ChefConfig.load(config_dir=chef_dir, environ={})
    key = tmp_path / "key.pem"
    key.write_bytes(b"\x80binary")
    key.chmod(0o600)
    monkeypatch.setenv("CHEF_CLIENT_KEY", str(key))
    err = one_line_error(*crowbar_cli("machines", "list")[::2])
    assert f"client key {key} is not UTF-8 text" in err
