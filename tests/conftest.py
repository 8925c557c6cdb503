"""The suite uses the project's own pytest plugin (barclamp_sdk.testing)."""

import json
import os
from pathlib import Path

import pytest

from barclamp_sdk.testing.pytest_plugin import PERSONALITY_MARK

from tests.support import figures
from tests.support.widgets import TEST_BARCLAMPS

pytest_plugins = ["pytester", "tests.support.parallel"]

#: Suites that run through the production personality (organization URL, 1 s search
#: lag, erchef's limits) in a search window of 10, smaller than their clusters.
PRODUCTION_SUITES = frozenset({
    "test_machines.py", "test_proposals.py", "test_commit.py", "test_queue.py", "test_concurrency.py",
    "test_faults.py", "test_soak.py", "test_session.py", "test_demo.py",
})
os.environ.setdefault("CROWBAR_TEST_SEARCH_WINDOW", "10")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.getparent(pytest.Module)
        if module is not None and module.path.name in PRODUCTION_SUITES \
                and not any(m.name == PERSONALITY_MARK for m in module.own_markers):
            module.add_marker(getattr(pytest.mark, PERSONALITY_MARK))


@pytest.fixture
def barclamps_under_test():
    return TEST_BARCLAMPS


@pytest.fixture
def crowbar_clients(chef_server, chef, barclamps_under_test):
    """``(client, fresh)``: each call a new facade on the test server (no stale caches);
    ``fresh`` resets the server first (what the crash harness starts each step from)."""
    from barclamp_sdk import Crowbar
    from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

    def client():
        return Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)

    def fresh():
        chef_server.reset()
        return client()

    return client, fresh


@pytest.fixture
def cli(crowbar_cli):
    """``cli(*args, expect=0)`` -> (stdout, stderr), asserting the exit code; ``cli.json(...)`` the
    parsed ``--json`` output; ``cli.error(..., expect=N)`` the JSON error object on stderr."""
    def run(*args, expect=0):
        code, out, err = crowbar_cli(*args)
        assert code == expect, (args, code, out, err)
        return out, err

    def run_json(*args, expect=0):
        out, _ = run(*args, "--json", expect=expect)
        return json.loads(out)

    def error_json(*args, expect):
        """An error in JSON mode: nothing on stdout, one JSON object on stderr."""
        out, err = run(*args, "--json", expect=expect)
        assert out == "" and err.count("\n") == 1, (out, err)
        return json.loads(err)

    run.json = run_json
    run.error = error_json
    return run


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # an xdist worker (see tests/support/parallel.py)
        return  # the controller writes every worker's figures (tests/support/parallel.py)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    outcomes = {key: len(reporter.stats.get(key, [])) for key in ("passed", "failed", "error")} if reporter else {}
    figures.write(Path(session.config.rootpath) / "build" / "reliability-figures.json", outcomes)
