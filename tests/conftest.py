"""The suite uses the project's own pytest plugin (barclamp_sdk.testing)."""

import pytest

from tests.support.widgets import TEST_BARCLAMPS

pytest_plugins = ["pytester"]


@pytest.fixture
def barclamps_under_test():
    return TEST_BARCLAMPS
