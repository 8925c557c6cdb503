"""The suite uses the project's own pytest plugin (barclamp_sdk.testing)."""

from pathlib import Path

import pytest

from tests.support import figures
from tests.support.widgets import TEST_BARCLAMPS

pytest_plugins = ["pytester"]


@pytest.fixture
def barclamps_under_test():
    return TEST_BARCLAMPS


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    outcomes = {key: len(reporter.stats.get(key, [])) for key in ("passed", "failed", "error")} if reporter else {}
    figures.write(Path(session.config.rootpath) / "build" / "reliability-figures.json", outcomes)
