"""A property-based fuzzer of the ``crowbar`` command (hypothesis), in-process, against goiardi.

Every example runs one CLI command with generated arguments, files,
environment or node data. Whatever happens:

* no "internal error" and no traceback, on stdout or stderr;
* an exit status the docs promise (0, 1, 2 or 3), and a refusal says why on stderr;
* a refusal (status 1 or 2) writes nothing: the whole server (nodes, roles,
  environments, clients, data bag items) is compared before and after.

Cheap examples (commands that refuse locally or only read) are many; the
ones that write to the server (node data, then discovery, listing, booting and
proposals from it) are fewer. CI runs ``CI_EXAMPLES`` in all; the long run
scales every part up::

    CROWBAR_FUZZ_EXAMPLES=50000 ./dev test tests/test_fuzz_cli.py -m fuzz

Figures of both runs are in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.model.naming import AUDIT_BAG, node_role_name
from barclamp_sdk.testing.snapshot import server_snapshot
from tests.support.widgets import WidgetAttributes

pytestmark = pytest.mark.fuzz

#: Examples per part in CI (their sum is the CI run).
CI_BUDGET = {"arguments": 2400, "files": 1900, "environment": 400, "scenarios": 400, "nodes": 40}
CI_EXAMPLES = sum(CI_BUDGET.values())
TOTAL = int(os.environ.get("CROWBAR_FUZZ_EXAMPLES") or CI_EXAMPLES)
STATS: Counter[str] = Counter()
FIGURES = Path(__file__).resolve().parent.parent / "build" / "fuzz-figures.json"


def budget(part: str) -> settings:
    examples = max(1, round(CI_BUDGET[part] * TOTAL / CI_EXAMPLES))
    return settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


#: Every request the command sends (method, path), recorded by the ``world`` fixture.
SENT: list[tuple[str, str]] = []
#: Bags compared by their item names: the audit trail only grows (an entry is a fresh item, never
#: rewritten) and reaches thousands of entries in a run; reading it whole for every comparison
#: made the run quadratic (arguments: 1,339 s for 2,400 examples, 38 s of it in the commands).
LISTED_ONLY = frozenset({AUDIT_BAG})
#: A full server comparison at least every this many refusals, writes sent or not.
FULL_CHECK_EVERY = 10


def changes(before: dict, after: dict, path: str = "") -> list[str]:
    """Where two snapshots differ (for the failure message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) != after.get(key):
                found += changes(before.get(key), after.get(key), f"{path}/{key}")
        return found[:10]
    return [f"{path}: {str(before)[:200]} -> {str(after)[:200]}"]


class Harness:
    """Runs commands and checks the rules, keeping the last snapshot of the server.

    After a refusal the whole server is compared with the snapshot taken
    before whenever the command sent any write request (PUT, POST, DELETE:
    it may have written and then undone), and every ``FULL_CHECK_EVERY``th
    refusal regardless; a refusal that sent only GETs cannot have written.
    """

    def __init__(self, cli, chef, part: str) -> None:
        self.started = time.monotonic()
        self.cli = cli
        self.chef = chef
        self.part = part
        self.baseline = server_snapshot(chef, listed_only=LISTED_ONLY)
        self.refusals = 0

    def run(self, *args: str) -> tuple[int, str, str]:
        STATS[f"{self.part}.seconds"] = round(time.monotonic() - self.started)
        if STATS[f"{self.part}.runs"] % 500 == 0:
            write_figures()  # a long run that is stopped still leaves its counts
        SENT.clear()
        code, out, err = self.cli(*args)
        writes = [r for r in SENT if r[0] != "GET" and not r[1].startswith("/search/")]  # search POSTs read
        STATS[f"{self.part}.runs"] += 1
        STATS[f"{self.part}.exit{code}"] += 1
        shown = f"args={args!r} code={code}\nstdout={out[-2000:]}\nstderr={err[-2000:]}\nwrites={writes[:5]}"
        for text in (out, err):
            assert "internal error" not in text and "Traceback (most recent call last)" not in text, shown
        assert code in (0, 1, 2, 3), shown
        if code in (1, 2):
            assert err.strip(), shown
            last = err.rstrip("\n").splitlines()[-1]
            # JSON mode errors are a JSON object. "--json" after a "--" is JSON mode only when that
            # "--" was an option's value (``--client-key -- queue --json``): either form is right then.
            json_mode = "--json" in (args[:args.index("--")] if "--" in args else args)
            maybe_json = "--json" in args and last.startswith("{")
            if json_mode or maybe_json:
                report = json.loads(last)
                assert report["exit_code"] == code and report["error"] and report["type"], shown
            elif code == 1:
                assert last.startswith("error: "), shown
            self.refusals += 1
            if writes or self.refusals % FULL_CHECK_EVERY == 0:
                STATS[f"{self.part}.compared"] += 1
                after = server_snapshot(self.chef, listed_only=LISTED_ONLY)
                if after != self.baseline:
                    before, self.baseline = self.baseline, after  # the next example starts from here
                    raise AssertionError(f"a refused command wrote to the server: {shown}\n{changes(before, after)}")
        elif writes:
            self.baseline = server_snapshot(self.chef, listed_only=LISTED_ONLY)
        return code, out, err

    def rebase(self) -> None:
        self.baseline = server_snapshot(self.chef, listed_only=LISTED_ONLY)


@pytest.fixture
def world(crowbar_cli, chef, tmp_path, monkeypatch):
    """Two ready machines, a saved widget proposal (draft); HOME in tmp (no real ~/.chef)."""
    original = ChefClient.request

    def recording(self, method, path, *args, **kwargs):
        SENT.append((method.upper(), path))
        return original(self, method, path, *args, **kwargs)

    monkeypatch.setattr(ChefClient, "request", recording)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CROWBAR_EDIT_RETRY", "0")
    monkeypatch.delenv("VISUAL", raising=False)
    added = crowbar_cli.json("sim", "nodes", "add", "2")["added"]
    crowbar_cli("sim", "boot", "--all")
    crowbar_cli("machines", "allocate", "--all")
    crowbar_cli("sim", "boot", "--all")
    code, _, err = crowbar_cli("widget", "proposal", "create", "default")
    assert code == 0, err
    return {"cli": crowbar_cli, "chef": chef, "tmp": tmp_path, "machines": added, "monkeypatch": monkeypatch}


# -- strategies ---------------------------------------------------------------------------

SPECIAL = ["", ".", "..", "-", "--", "trail\n", "\ttab", " lead", "[/bold]", "[red]x[/red]", "[link=http://e]x",
           "template", "nodes", "a" * 300, "col:on", "a.b", "a_b", "..._example_com", "%2e%2e", "../etc", "a/b",
           "*", "?", "é", "名前", "\x1b[31m", "--help", "-h", "default", "widget-agent", "0", "-1", "1e400",
           "null", "http://[::1", "{", "[", "'", '"', "\\", "$HOME", "`id`", "\u202e", "a\rb"]
# Click refuses NUL bytes in no special way; they are still generated (files, env) below.
TEXT = st.sampled_from(SPECIAL) | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                           max_size=24)
NAME = TEXT | st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
SERVER_URLS = (st.sampled_from(["http://[::1", "http://h:99999", "http://127.0.0.1:port", "ftp://127.0.0.1", "http://",
                                "http:// 127.0.0.1", "http://127.0.0.1\n", "127.0.0.1", "http://[", "https://:80"])
               | TEXT.filter(lambda t: "://" not in t)
               | TEXT.filter(lambda t: not t.isdigit()).map(lambda t: "http://[" + t)
               | TEXT.filter(lambda t: t and not t.strip().isdigit()).map(lambda t: "http://127.0.0.1:" + t))
KEYS = ["port", "mode", "password", "depends_on", "disks", "nested", "nested.depth", "nested.label", "tags"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


def commands(machines: list[str]) -> st.SearchStrategy[list[str]]:
    """Command lines that refuse locally or only read (plus a few that may write)."""
    machine = st.sampled_from(machines) | NAME
    bc = st.sampled_from(["widget", "gizmo", "nova"]) | TEXT
    return st.one_of(
        st.tuples(st.just("widget"), st.just("proposal"),
                  st.sampled_from(["show", "status", "history", "diff", "delete", "dequeue", "commit", "deactivate"]),
                  NAME).map(list),
        st.tuples(st.just("widget"), st.just("proposal"), st.just("create"), NAME, st.just("--empty")).map(list),
        st.tuples(st.just("widget"), st.just("proposal"), st.just("create"), st.just("fz"), st.just("--empty"),
                  st.just("--description"), TEXT).map(list),
        st.tuples(st.just("widget"), st.just("proposal"), st.just("edit"), st.sampled_from(["default", "fz"]) | NAME,
                  st.just("--set"), st.tuples(st.sampled_from(KEYS) | TEXT, TEXT).map("=".join)).map(list),
        st.tuples(st.just("widget"), st.just("proposal"), st.just("edit"), st.just("default"),
                  st.just("--unset"), st.sampled_from(KEYS) | TEXT).map(list),
        st.tuples(st.just("widget"), st.just("proposal"), st.just("diff"), st.just("default"),
                  st.integers(-3, 5).map(str), st.integers(-3, 5).map(str)).map(list),
        st.tuples(bc, st.just("proposal"), st.just("show"), NAME).map(list),
        st.tuples(st.just("machines"), st.sampled_from(["show", "discover", "allocate", "check"]), machine).map(list),
        st.tuples(st.just("machines"), st.just("transition"), machine,
                  st.sampled_from(["discovering", "ready", "problem", "applying", "readying"]) | TEXT).map(list),
        st.tuples(st.just("roles"), st.just("show"), machine).map(list),
        st.tuples(st.just("sim"), st.just("boot"), machine).map(list),
        st.tuples(st.just("sim"), st.just("converge"), machine).map(list),
        st.tuples(st.just("raw"), st.just("GET"), TEXT | TEXT.map(lambda t: "/" + t)).map(list),
        # Server URLs: malformed ones only (a well-formed URL would make the client resolve and connect).
        st.tuples(st.just("--server-url"), SERVER_URLS, st.just("machines"), st.just("list")).map(list),
        st.tuples(st.sampled_from(["--client-key", "--profile", "--client-name", "--ca-file"]), TEXT,
                  st.sampled_from(["machines", "queue"]), st.sampled_from(["list", "--json"])).map(list),
        st.tuples(st.sampled_from(["queue", "barclamps", "machines", "batch", "local"]), TEXT).map(list),
        st.lists(TEXT, max_size=4),
    )


def with_output(args: list[str], fmt: str) -> list[str]:
    return [*args, fmt] if fmt else args


def document_texts(base: dict) -> st.SearchStrategy[bytes]:
    """Whole proposal documents: mutated real ones, other JSON/YAML, binary, hostile YAML."""
    paths = [(), ("id",), ("description",), ("notes",), ("attributes",), ("attributes", "widget"),
             ("attributes", "widget", "port"), ("attributes", "widget", "nested"), ("attributes", "nova"),
             ("deployment",), ("deployment", "widget"), ("deployment", "nova"),
             *(("deployment", "widget", k) for k in ("crowbar-revision", "elements", "element_order", "element_states",
                                                     "element_run_list_order", "config", "extra")),
             ("deployment", "widget", "elements", "widget-agent"), ("deployment", "widget", "config", "environment")]

    def mutate(choice: tuple[tuple[str, ...], object, bool]) -> bytes:
        path, value, as_yaml = choice
        document = json.loads(json.dumps(base))
        if not path:
            document = value
        else:
            target = document
            for key in path[:-1]:
                target = target.setdefault(key, {}) if isinstance(target, dict) else {}
            if isinstance(target, dict):
                target[path[-1]] = value
        text = yaml.safe_dump(document, allow_unicode=True) if as_yaml else json.dumps(document)
        return text.encode("utf-8", "surrogatepass")

    hostile = st.sampled_from([
        b"", b"\xff\xfe\x00", "a: &a [*a]".encode(), b"[" * 5000, b"{" * 3000, b"a: !!python/object:os.system x",
        b"a: !!binary aGk=", b"- - - - -", b"\x00\x01", "\ufeff{}".encode(), b"id: [", b"1: 2", b".nan",
        ("a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 9) + "]\n" for i in range(1, 10))).encode(),
    ])
    return st.one_of(st.tuples(st.sampled_from(paths), JSON_VALUES, st.booleans()).map(mutate), hostile,
                     st.binary(max_size=64), JSON_VALUES.map(lambda v: json.dumps(v).encode()))


def scenario_texts(machines: list[str]) -> st.SearchStrategy[bytes]:
    entry = st.fixed_dictionaries(
        {"barclamp": st.sampled_from(["widget", "gizmo", "nova"]) | TEXT,
         "name": st.sampled_from(["fz", "default"]) | NAME},
        optional={"description": TEXT | JSON_VALUES, "attributes": st.fixed_dictionaries({}, optional={
                      k: JSON_VALUES for k in ("port", "mode", "nested", "tags", "bogus")}) | JSON_VALUES,
                  "deployment": st.fixed_dictionaries({}, optional={"elements": st.dictionaries(
                      st.sampled_from(["widget-server", "widget-agent", "nope"]) | TEXT,
                      st.lists(st.sampled_from(machines) | NAME, max_size=3), max_size=3) | JSON_VALUES}),
                  "commit": st.booleans() | JSON_VALUES, "extra": JSON_VALUES})
    scenario = st.fixed_dictionaries({"proposals": st.lists(entry, max_size=3)}) | JSON_VALUES
    return scenario.map(lambda s: yaml.safe_dump(s, allow_unicode=True).encode("utf-8", "surrogatepass"))


# -- the parts ----------------------------------------------------------------------------


def test_fuzz_arguments(world):
    """Generated command lines (names, keys, values, URLs, options), many and cheap."""
    harness = Harness(world["cli"], world["chef"], "arguments")

    @budget("arguments")
    @given(commands(world["machines"]), st.sampled_from(["", "", "--json", "--yaml"]))
    def run(args, fmt):
        code, _, _ = harness.run(*with_output(args, fmt))
        if code == 0 and args[:3] == ["widget", "proposal", "create"] and len(args) > 3 and args[3] != "default":
            harness.cli("widget", "proposal", "delete", args[3])  # keep the server small
            harness.rebase()

    run()


def test_fuzz_files(world):
    """``proposal edit --file``, ``raw PUT --data``: generated documents and hostile bytes."""
    harness = Harness(world["cli"], world["chef"], "files")
    base = world["cli"].json("widget", "proposal", "show", "default")
    path = world["tmp"] / "input"

    @budget("files")
    @given(document_texts(base), st.sampled_from(["edit", "edit", "edit", "raw"]))
    def run(content, how):
        path.write_bytes(content)
        if how == "edit":
            harness.run("widget", "proposal", "edit", "default", "--file", str(path))
        else:
            harness.run("raw", "PUT", "/roles/fuzz-nonexistent", "--data", str(path))

    run()


EDITORS = ["/nonexistent/editor", "vi '", "  ", "true", "false", "sh -c 'exit 3'", "'unclosed", "\"", "\\",
           "sh -c 'printf garbage: >> \"$0\"'", "sh -c 'printf \"\\377\\376\" > \"$0\"'",
           "sh -c ': > \"$0\"'", "sh -c 'echo \"[\" >> \"$0\"'"]


def test_fuzz_environment(world):
    """The editor flow under generated $EDITOR values, and odd CHEF_* variables."""
    harness = Harness(world["cli"], world["chef"], "environment")
    monkeypatch = world["monkeypatch"]
    variables = ("CHEF_SERVER_URL", "CHEF_CLIENT_KEY", "CHEF_CLIENT_NAME", "CHEF_PROFILE")
    saved = {name: os.environ.get(name) for name in variables}

    @budget("environment")
    @given(st.sampled_from(EDITORS) | TEXT.map(lambda t: f"/nonexistent/{t}"),
           st.sampled_from([None, None, *variables]), TEXT)
    def run(editor, variable, value):
        monkeypatch.setenv("EDITOR", editor)
        if variable:
            monkeypatch.setenv(variable, value or "x")
        try:
            harness.run("widget", "proposal", "edit", "default")
        finally:
            for name, original in saved.items():
                if original is None:
                    monkeypatch.delenv(name, raising=False)
                else:
                    monkeypatch.setenv(name, original)

    run()


def test_fuzz_scenarios(world):
    """``batch apply`` with generated scenario files."""
    harness = Harness(world["cli"], world["chef"], "scenarios")
    path = world["tmp"] / "scenario.yaml"

    @budget("scenarios")
    @given(scenario_texts(world["machines"]) | document_texts({"proposals": []}))
    def run(content):
        path.write_bytes(content)
        harness.run("batch", "apply", str(path))

    run()


OHAI_KEYS = ["memory", "cpu", "block_device", "dmi", "network", "platform", "kernel", "virtualization"]


def test_fuzz_node_data(world):
    """Nodes of generated names and facts: discovery, listing, booting and proposals go on."""
    harness = Harness(world["cli"], world["chef"], "nodes")
    chef = world["chef"]

    @budget("nodes")
    @given(st.from_regex(r"[A-Za-z0-9_:.-]{1,30}", fullmatch=True) | st.sampled_from(
               ["a.b.example.com", "a_b.example.com", "col:on", "..._example_com", "d52-54-00-00-00-01_example_com"]),
           st.dictionaries(st.sampled_from(OHAI_KEYS), JSON_VALUES, max_size=4),
           st.one_of(st.none(), JSON_VALUES), st.sampled_from(["discover", "list", "boot", "boot-all", "create"]))
    def run(name, automatic, wall, action):
        if name in (".", "..") or chef.nodes.find(name) is not None:
            return
        chef.nodes.create({"name": name, "json_class": "Chef::Node", "chef_type": "node", "run_list": [],
                           "automatic": automatic, "normal": {"crowbar_wall": wall} if wall is not None else {},
                           "default": {}, "override": {}})
        harness.rebase()
        try:
            if action == "discover":
                harness.run("machines", "discover")
                harness.run("machines", "show", name)
            elif action == "list":
                harness.run("machines", "discover", name)
                harness.run("machines", "list")
                harness.run("roles", "show", name)
            elif action in ("boot", "boot-all"):
                harness.run("sim", "boot", *(["--all"] if action == "boot-all" else [name]), "--until", "discovered")
            else:
                harness.run("machines", "discover")
                harness.run("widget", "proposal", "create", "fz")
                harness.run("widget", "proposal", "show", "fz")
        finally:
            for proposal in ("fz",):
                harness.cli("widget", "proposal", "delete", proposal)
            role = node_role_name(name)
            if chef.roles.find(role) is not None and role not in {node_role_name(m) for m in world["machines"]}:
                chef.roles.delete(role)
            chef.nodes.delete(name)

    run()


STARTED = time.monotonic()


def write_figures() -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps({"examples_asked": TOTAL, "seconds": round(time.monotonic() - STARTED, 1),
                                   **dict(sorted(STATS.items()))}, indent=2) + "\n")


@pytest.fixture(scope="module", autouse=True)
def figures():
    global STARTED
    STARTED = time.monotonic()
    yield
    write_figures()


def test_settings_module_keys_are_real():
    """The fuzzer's setting keys are the widget's (so --set examples reach validation)."""
    assert set(KEYS) <= {*WidgetAttributes.model_fields, "nested.depth", "nested.label"}
